"""Fold-wise few-shot segmentation metrics: mIoU and FB-IoU as published, and a bootstrap interval.

Per episode, the binary prediction and the binary query mask give a foreground and a background
intersection and union (pixel counts). With the ignore label on, ignored pixels (PASCAL-5i's 255
boundary) count in neither; with it off (paper Table A1) the caller's ground truth already has
them as background, and they are scored like any other pixel.

The counts are summed per class over the fold's episodes. Then
  mIoU   = 100 * mean over the fold's classes of (foreground intersection / foreground union),
  FB-IoU = 100 * mean of (sum over the fold's classes of the foreground intersections / of the
           foreground unions) and the same ratio for the background.

Empty unions: a ratio whose union is 0 (a fold class with no episodes, or whose masks and
predictions are all empty) is taken as 0, i.e. the union is clamped to at least 1 as in the
published evaluator. Such a class still counts in the mean, so it lowers mIoU rather than being
silently dropped; `per_class` shows its union of 0 and its episode count.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import pandas as pd
import torch

AREA_COLUMNS = ("fg_inter", "fg_union", "bg_inter", "bg_union")


def episode_areas(pred: torch.Tensor, gt: torch.Tensor, ignore: torch.Tensor | None = None) -> torch.Tensor:
    """Per-episode (fg_inter, fg_union, bg_inter, bg_union) pixel counts, (B, 4) int64.

    pred, gt: (B, H, W) with values in {0, 1}; ignore: (B, H, W), nonzero = pixel not scored.
    """
    if pred.shape != gt.shape or pred.dim() != 3:
        raise ValueError(f"pred {tuple(pred.shape)} and gt {tuple(gt.shape)} must both be (B, H, W)")
    for name, t in (("pred", pred), ("gt", gt)):
        if ((t != 0) & (t != 1)).any():
            raise ValueError(f"{name} must hold only 0 and 1")
    pred, gt = pred.bool(), gt.bool()
    valid = torch.ones_like(pred) if ignore is None else ~ignore.bool()
    def count(mask: torch.Tensor) -> torch.Tensor:
        return (mask & valid).flatten(1).sum(1)
    return torch.stack(
        [count(pred & gt), count(pred | gt), count(~pred & ~gt), count(~pred | ~gt)], dim=1
    )


def ratio(inter: np.ndarray, union: np.ndarray) -> np.ndarray:
    """inter / union with the union clamped to >= 1 (an empty union gives 0)."""
    return inter / np.maximum(union, 1)


class IoUMeter:
    """Accumulates per-class intersections and unions over a fold's episodes."""

    def __init__(self, class_ids: Sequence[int], ignore_label: bool = True):
        self.class_ids = [int(c) for c in class_ids]
        if len(set(self.class_ids)) != len(self.class_ids) or not self.class_ids:
            raise ValueError(f"class_ids must be distinct and non-empty, got {class_ids}")
        self.ignore_label = ignore_label
        self._slot = {c: i for i, c in enumerate(self.class_ids)}
        self.sums = np.zeros((len(self.class_ids), 4), np.int64)  # per class: AREA_COLUMNS
        self.counts = np.zeros(len(self.class_ids), np.int64)  # episodes per class

    def update(
        self,
        pred: torch.Tensor,
        gt: torch.Tensor,
        class_ids: Sequence[int] | torch.Tensor,
        ignore: torch.Tensor | None = None,
    ) -> np.ndarray:
        """Add a batch of episodes: pred, gt (B, H, W) in {0, 1}; class_ids (B,); ignore (B, H, W)
        applied only when the meter's ignore_label is on. Returns their areas, (B, 4) int64."""
        areas = episode_areas(pred, gt, ignore if self.ignore_label else None).cpu().numpy()
        class_ids = [int(c) for c in class_ids]
        if len(class_ids) != len(areas):
            raise ValueError(f"{len(class_ids)} class ids for a batch of {len(areas)}")
        for class_id, row in zip(class_ids, areas):
            if class_id not in self._slot:
                raise ValueError(f"class {class_id} is not one of the meter's classes {self.class_ids}")
            self.sums[self._slot[class_id]] += row
            self.counts[self._slot[class_id]] += 1
        return areas

    @property
    def miou(self) -> float:
        """Mean foreground IoU over the fold's classes, in percent."""
        return float(ratio(self.sums[:, 0], self.sums[:, 1]).mean() * 100)

    @property
    def fbiou(self) -> float:
        """Mean of the foreground and background IoU of the sums over the fold's classes, in percent."""
        total = self.sums.sum(0)
        return float((ratio(total[0], total[1]) + ratio(total[2], total[3])) / 2 * 100)

    @property
    def per_class(self) -> pd.DataFrame:
        """One row per fold class: class_id, episodes, the summed areas, iou (foreground, percent)."""
        frame = pd.DataFrame(self.sums, columns=list(AREA_COLUMNS))
        frame.insert(0, "class_id", self.class_ids)
        frame.insert(1, "episodes", self.counts)
        frame["iou"] = ratio(self.sums[:, 0], self.sums[:, 1]) * 100
        return frame


def _onehot(class_ids: Sequence[int], classes: Sequence[int]) -> np.ndarray:
    """(N, C) float indicator of each episode's class among `classes`."""
    slot = {int(c): i for i, c in enumerate(classes)}
    onehot = np.zeros((len(class_ids), len(slot)))
    onehot[np.arange(len(class_ids)), [slot[int(c)] for c in class_ids]] = 1
    return onehot


def _resampled_miou(weights: np.ndarray, onehot: np.ndarray, fg_inter: np.ndarray, fg_union: np.ndarray) -> np.ndarray:
    """Fold mIoU (percent) of each replicate: weights (n_boot, N) episode counts, onehot (N, C) -> (n_boot,)."""
    inter = weights @ (onehot * fg_inter[:, None])  # (n_boot, C)
    union = weights @ (onehot * fg_union[:, None])
    return ratio(inter, union).mean(-1) * 100


def _resample(rng: np.random.Generator, n: int, n_boot: int) -> np.ndarray:
    """(n_boot, n) counts of each of n items in n_boot resamples with replacement."""
    return rng.multinomial(n, np.full(n, 1 / n), size=n_boot)


def _interval(replicates: np.ndarray, level: float) -> tuple[float, float]:
    alpha = (1 - level) / 2
    low, high = np.quantile(replicates, [alpha, 1 - alpha])
    return float(low), float(high)


def bootstrap_miou(
    fg_inter: np.ndarray,
    fg_union: np.ndarray,
    class_ids: np.ndarray,
    fold_classes: Sequence[int],
    groups: np.ndarray | None = None,
    n_boot: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> tuple[float, float]:
    """Percentile bootstrap interval of the fold mIoU (percent) over episodes.

    Each replicate resamples the episodes with replacement (within each group, e.g. each episode
    seed) and recomputes the fold mIoU from the resampled per-class sums; with groups the statistic
    is the mean over groups of their fold mIoU. Arrays are per episode, (N,).
    """
    rng = np.random.default_rng(seed)
    groups = np.zeros(len(fg_inter), np.int64) if groups is None else np.asarray(groups)
    onehot = _onehot(class_ids, fold_classes)  # (N, C)
    replicates = np.zeros(n_boot)
    unique_groups = np.unique(groups)
    for group in unique_groups:
        members = np.flatnonzero(groups == group)
        weights = _resample(rng, len(members), n_boot)  # (n_boot, n)
        replicates += _resampled_miou(weights, onehot[members], fg_inter[members], fg_union[members]) / len(unique_groups)
    return _interval(replicates, level)


PAIRING_KEYS = ("seed", "episode", "class_id", "query", "supports")  # what makes two scored episodes the same


def paired_bootstrap(episodes: pd.DataFrame, reference: pd.DataFrame, fold_classes: Sequence[int] | None = None,
                     n_boot: int = 1000, seed: int = 0, level: float = 0.95) -> dict[str, Any]:
    """The fold mIoU difference ``episodes`` - ``reference`` on the same episodes, with a paired percentile
    bootstrap interval.

    Both frames are per-episode scores (``EvalResult.episodes``: PAIRING_KEYS, fg_inter, fg_union). Each
    replicate resamples the shared episodes with replacement -- the same draw for both -- and recomputes both
    fold mIoUs from the resampled per-class sums (as :func:`bootstrap_miou` does for one), so the
    episode-to-episode difficulty both share cancels in the difference. ``fold_classes`` (default: the classes
    met) are the classes averaged over; a fold class without episodes counts as IoU 0 in both.
    Returns {"delta_miou", "ci95": [low, high], "episodes"}.
    """
    keys = list(PAIRING_KEYS)
    if len(episodes) != len(reference) or not episodes[keys].reset_index(drop=True).equals(
            reference[keys].reset_index(drop=True)):
        raise ValueError("a paired comparison needs both evaluations on the same episodes (same data, fold, shots, "
                         "episode seed and count)")
    classes = sorted(set(episodes["class_id"]) | set(fold_classes if fold_classes is not None else []))
    onehot = _onehot(episodes["class_id"].to_numpy(), classes)  # (N, C)
    weights = _resample(np.random.default_rng(seed), len(episodes), n_boot)  # (n_boot, N)

    def miou(frame: pd.DataFrame, w: np.ndarray) -> np.ndarray:
        return _resampled_miou(w, onehot, frame["fg_inter"].to_numpy(), frame["fg_union"].to_numpy())

    delta = miou(episodes, weights) - miou(reference, weights)
    everything = np.ones((1, len(episodes)))
    point = float(miou(episodes, everything)[0] - miou(reference, everything)[0])
    return {"delta_miou": point, "ci95": list(_interval(delta, level)), "episodes": len(episodes)}
