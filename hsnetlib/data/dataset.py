"""`FewShotDataset`: the episodes of one registered benchmark's fold and split, and `build_dataset`.

Split "trn" holds training episodes: episode ``i`` of epoch ``e`` is drawn from
``RandomState([seed, e, i])`` when it is loaded, so it is random per epoch, reproducible from (seed,
epoch) and independent of the worker that loads it. Index the data set with the key ``(e, i)`` -- what
the trainer's sampler yields, so that persistent DataLoader workers, whose copies of the data set never
see the main process again, load the right epoch -- or with ``i`` after ``set_epoch(e)``
(non-persistent workers copy the data set at every epoch). Splits "val" and "test" hold fixed episodes
(see hsnetlib.data.base); on PASCAL-5i and COCO-20i they are the same 1,000 episodes over the fold's val
list (the published test protocol).

``resize="aspect"`` instead of the published square resize scales the longer side to ``img_size`` and
pads bottom/right to ``img_size x img_size`` (image padding 0 after normalization, mask padding 0);
``query_valid_size`` says which top-left region is real so that evaluation ignores the padding.
``use_original_imgsize=True`` keeps the query mask (and ignore map) at the original resolution.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import Dataset

from hsnetlib.data.base import (
    PAPER_IMG_SIZE, RESIZE_MODES, SPLITS, DatasetConfig, Episode, EpisodeIndex, Layout, Loaded, draw_episode,
    image_to_tensor, mask_to_tensor,
)
from hsnetlib.data.registry import BenchmarkSpec, get_benchmark


class FewShotDataset(Dataset):
    """Episodes of one benchmark fold and split; an item is a dict (see `__getitem__`)."""

    def __init__(self, config: DatasetConfig, layout: Layout, index: EpisodeIndex):
        self.config = config
        self.layout = layout
        self.index = index
        self.epoch = 0
        self.fixed_episodes = config.split != "trn"
        self._episodes: list[Episode] = []
        if self.fixed_episodes:
            rng = np.random.RandomState(config.seed)
            self._episodes = [draw_episode(index, i, config.shot, rng) for i in range(index.n_episodes)]

    benchmark = property(lambda self: self.config.benchmark)
    fold = property(lambda self: self.config.fold)
    split = property(lambda self: self.config.split)
    shot = property(lambda self: self.config.shot)
    seed = property(lambda self: self.config.seed)
    img_size = property(lambda self: self.config.img_size)
    use_original_imgsize = property(lambda self: self.config.use_original_imgsize)
    class_ids = property(lambda self: list(self.index.class_ids))
    class_names = property(lambda self: list(self.layout.class_names))
    nclass = property(lambda self: len(self.layout.class_names))
    spec = property(lambda self: get_benchmark(self.config.benchmark))
    scoring = property(lambda self: self.spec.scoring)

    def describe(self) -> dict[str, Any]:
        """What a run record stores about its data: the config (the benchmark's options filled in), the
        benchmark's label, the episode count, the class names and the scoring."""
        return {**dataclasses.asdict(self.config), "label": self.spec.label, "n_episodes": len(self),
                "class_names": self.class_names, "scoring": dataclasses.asdict(self.scoring)}

    def __len__(self) -> int:
        return self.index.n_episodes

    def set_epoch(self, epoch: int) -> None:
        """Redraw the training episodes for `epoch` (no effect on the fixed val/test episodes)."""
        self.epoch = int(epoch)

    def with_episodes(self, seed: int | None = None, shot: int | None = None) -> "FewShotDataset":
        """The same data with episodes drawn for another seed and/or shot."""
        changes = {k: v for k, v in (("seed", seed), ("shot", shot)) if v is not None}
        return build_dataset(**dataclasses.asdict(dataclasses.replace(self.config, **changes)))

    def episode(self, idx: int, epoch: int | None = None) -> Episode:
        """Episode `idx` (of training epoch `epoch`, None: the one `set_epoch` chose) by name, without
        loading any image."""
        if not 0 <= idx < len(self):
            raise IndexError(f"episode {idx} out of range for {len(self)} episodes")
        if self.fixed_episodes:
            return self._episodes[idx]
        rng = np.random.RandomState([self.config.seed, self.epoch if epoch is None else epoch, idx])
        return draw_episode(self.index, idx, self.config.shot, rng)

    def __getitem__(self, key: int | tuple[int, int]) -> dict[str, Any]:
        """The episode `key` = idx or (epoch, idx) (see `episode`) as tensors:

        query_img (3,s,s), query_mask (s,s) [or (H0,W0)], query_name, org_query_imsize (2,) = (H0,W0),
        query_valid_size (2,) = the (h,w) top-left region holding the image, support_imgs (K,3,s,s),
        support_masks (K,s,s), support_names, class_id, episode; on PASCAL-5i also query_ignore_idx
        (like query_mask) and support_ignore_idxs (K,s,s), 1 on boundary pixels."""
        epoch, idx = key if isinstance(key, tuple) else (None, key)
        ep = self.episode(idx, epoch)
        query = self.layout.load(ep.query, ep.class_id)
        h0, w0 = query.image.height, query.image.width
        hw = self._resized_size(h0, w0)
        supports = [self._support_tensors(self.layout.load(name, ep.class_id)) for name in ep.supports]
        item: dict[str, Any] = {
            "query_img": self._image_tensor(query.image, hw),
            "query_mask": self._query_label(query.fg, hw),
            "query_name": ep.query,
            "org_query_imsize": torch.tensor([h0, w0]),
            "query_valid_size": torch.tensor(hw),
            "support_imgs": torch.stack([s[0] for s in supports]),
            "support_masks": torch.stack([s[1] for s in supports]),
            "support_names": list(ep.supports),
            "class_id": ep.class_id,
            "episode": idx,
        }
        if query.boundary is not None:
            item["query_ignore_idx"] = self._query_label(query.boundary, hw)
            item["support_ignore_idxs"] = torch.stack([s[2] for s in supports])
        return item

    def _support_tensors(self, support: Loaded) -> tuple[torch.Tensor, ...]:
        """(image (3,s,s), mask (s,s)[, boundary (s,s)]) of one support."""
        hw = self._resized_size(support.image.height, support.image.width)
        tensors = (self._image_tensor(support.image, hw), self._mask_tensor(support.fg, hw))
        if support.boundary is not None:
            tensors += (self._mask_tensor(support.boundary, hw),)
        return tensors

    # -- transforms ----------------------------------------------------------------------------

    def _resized_size(self, h0: int, w0: int) -> tuple[int, int]:
        s = self.config.img_size
        if self.config.resize == "square":
            return s, s
        scale = s / max(h0, w0)
        return max(1, round(h0 * scale)), max(1, round(w0 * scale))

    def _pad(self, tensor: torch.Tensor) -> torch.Tensor:
        s = self.config.img_size
        return F.pad(tensor, (0, s - tensor.shape[-1], 0, s - tensor.shape[-2]))

    def _image_tensor(self, image: Image.Image, hw: tuple[int, int]) -> torch.Tensor:
        return self._pad(image_to_tensor(image, hw))

    def _mask_tensor(self, mask: np.ndarray, hw: tuple[int, int]) -> torch.Tensor:
        return self._pad(mask_to_tensor(mask, hw))

    def _query_label(self, mask: np.ndarray, hw: tuple[int, int]) -> torch.Tensor:
        if self.config.use_original_imgsize:
            return torch.from_numpy(mask.astype(np.float32))
        return self._mask_tensor(mask, hw)


def _validate(config: DatasetConfig, spec: BenchmarkSpec) -> None:
    if config.split not in SPLITS:
        raise ValueError(f"split={config.split!r}: expected one of {SPLITS}")
    if config.split not in spec.splits:
        raise ValueError(f"benchmark {spec.name!r} has no {config.split!r} split (it has {', '.join(spec.splits)})"
                         + (f": {spec.note}" if spec.note else ""))
    if not (isinstance(config.fold, int) and 0 <= config.fold < spec.nfolds):
        raise ValueError(f"fold={config.fold!r} out of range for {spec.name} (0..{spec.nfolds - 1})")
    if not (isinstance(config.shot, int) and config.shot >= 1):
        raise ValueError(f"shot={config.shot!r}: expected an integer >= 1")
    if not (isinstance(config.img_size, int) and config.img_size >= 1):
        raise ValueError(f"img_size={config.img_size!r}: expected an integer >= 1")
    if config.resize not in RESIZE_MODES:
        raise ValueError(f"resize={config.resize!r}: expected one of {RESIZE_MODES}")
    if not (isinstance(config.seed, int) and 0 <= config.seed < 2**32):
        raise ValueError(f"seed={config.seed!r}: expected an integer in [0, 2**32)")
    if config.episodes is not None and not (isinstance(config.episodes, int) and config.episodes >= 1):
        raise ValueError(f"episodes={config.episodes!r}: expected None (the benchmark's count) or an integer >= 1")
    if spec.needs_class_split and config.class_split is None:
        raise ValueError(f'benchmark {spec.name!r} needs class_split={{"trn": [...], "val": [...], "test": [...]}} or a JSON path')


def _check_index(index: EpisodeIndex, layout: Layout, config: DatasetConfig) -> None:
    """Every class must offer a query and another image, or the support draw could never end."""
    if not index.class_ids:
        raise ValueError(f"{config.benchmark} fold {config.fold} split {config.split}: no class to draw episodes from")
    for class_id in index.class_ids:
        n = len(set(index.candidates[class_id]))
        if n < 2:
            raise ValueError(
                f"{config.benchmark} fold {config.fold} split {config.split}: class "
                f"{layout.class_names[class_id]!r} has {n} image(s); an episode needs at least 2"
            )


def build_dataset(
    benchmark: str,
    root: str | Path,
    fold: int,
    split: str,
    shot: int,
    img_size: int = PAPER_IMG_SIZE,
    use_original_imgsize: bool = False,
    resize: str = "square",
    seed: int = 0,
    class_split: Mapping[str, Sequence[str]] | str | Path | None = None,
    splits_dir: str | Path | None = None,
    episodes: int | None = None,
    options: Mapping[str, Any] | None = None,
) -> FewShotDataset:
    """The episodes of the registered `benchmark` (see `list_benchmarks()`), fold `fold`, split `split`,
    with `shot` supports each.

    `splits_dir` None reads the split lists shipped in hsnetlib/splits; otherwise a directory with
    the same structure (pascal/{trn,val}/foldF.txt, coco/{trn,val}/foldF.tsv.gz, fss/{trn,val,test}.txt).
    `class_split` is the folder benchmark's {"trn": [...], "val": [...], "test": [...]} (or a JSON path).
    `episodes`: how many episodes (None: the registered test-episode count for val/test, every training
    episode for trn). `options`: the benchmark's own options (`get_benchmark(name).options`), each
    defaulting to the protocol's choice; the resolved values are in `dataset.config.options`.
    """
    spec = get_benchmark(benchmark)
    config = DatasetConfig(
        benchmark=benchmark, root=str(root), fold=fold, split=split, shot=shot, img_size=img_size,
        use_original_imgsize=use_original_imgsize, resize=resize, seed=seed,
        class_split=str(class_split) if isinstance(class_split, Path) else class_split,
        splits_dir=None if splits_dir is None else str(splits_dir), episodes=episodes,
        options=spec.resolve_options(options),
    )
    _validate(config, spec)
    layout = spec.layout(config, spec)
    index = layout.index(fold, split)
    _check_index(index, layout, config)
    if episodes is not None:
        index.n_episodes = episodes
    elif split != "trn" and spec.test_episodes is not None:
        index.n_episodes = spec.test_episodes
    return FewShotDataset(config, layout, index)
