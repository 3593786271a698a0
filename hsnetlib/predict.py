"""Segment one's own images with a trained HSNet: one class (K-shot voting, Sec. 4.5) or several at once.

* :func:`predict`: K support (image, mask) file pairs and query image files -> per query, at the query's
  original size, ``STEM_mask.png`` (greyscale, 0 background / 255 foreground) and ``STEM_overlay.png``.
* :func:`predict_classes`: supports for C classes -> per query a label map ``STEM_labels.png`` (0 background,
  c = the c-th class), ``STEM_overlay.png`` with a legend, and ``classes.json`` (label -> class name).
  :func:`predict_labels` is the same on tensors.

The multi-class rule: every class is its own binary episode (its supports only), decided exactly as the
one-class prediction decides it (1-shot argmax; K-shot voting), and gives a foreground probability per pixel
(the mean over its supports of the softmax foreground probability). A pixel is background where no class's
episode decides foreground; where several do, it takes the class with the highest probability, and on an
exact tie the lowest class index (the first ``--class`` given).

Inputs use the datasets' transform (RGB, ``Resize((s, s))`` bilinear, ImageNet normalisation). Unlike the
benchmarks (whose masks follow the stored pixels, as in the authors' code), the user's images and masks are
read as image viewers show them: their EXIF orientation is applied. Support masks are greyscale images whose
pixels >= 128 are foreground (the FSS-1000 convention, so 0/255 masks work; a 0/1 mask has no foreground and
is rejected).

Command line: :func:`add_arguments` and :func:`run_cli` (``python -m hsnetlib predict``).
"""
from __future__ import annotations

import argparse
import io
import json
import os
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps
from tqdm.auto import tqdm

from hsnetlib import viz
from hsnetlib.backbones import get_backbone, list_backbones
from hsnetlib.data import open_image, image_to_tensor, mask_to_tensor
from hsnetlib.model import FORMAT, PAPER_IMG_SIZE, HSNet, vote
from hsnetlib.utils import load_checkpoint
from hsnetlib.utils import atomic_write, pick_device

OVERLAY_ALPHA = 0.5
EXIF_ORIENTATION = 0x0112
EXIF_TRANSPOSED = (5, 6, 7, 8)  # orientations that swap width and height


def load_model(path: str | os.PathLike, backbone: str | None = None, map_location: str | torch.device = "cpu") -> HSNet:
    """An hsnetlib checkpoint (``HSNet.save`` / a training run's best.pt or last.pt) or an authors'
    released ``best_model.pt``, told apart automatically (the file is read once). ``backbone``, when given,
    must match."""
    payload = load_checkpoint(path, map_location=map_location)
    if not (isinstance(payload, dict) and payload.get("format") == FORMAT):
        return HSNet.from_official_state(payload, path, backbone=backbone)
    model = HSNet.from_payload(payload, path)
    if backbone is not None and model.config.backbone != backbone:
        raise ValueError(f"{path} is a checkpoint of an HSNet with a {model.config.backbone} backbone, not {backbone}")
    return model


def min_img_size(backbone: str | None = None) -> int:
    """The smallest input side ``backbone`` works at (None: every registered backbone): its deepest feature stride
    (pyramid level 3; a smaller input leaves that level less than one feature of image content), rounded up to
    its input multiple (a ViT's patch size)."""
    specs = [get_backbone(name) for name in ([backbone] if backbone else list_backbones())]
    return max(-(-max(s.level_strides) // s.input_multiple) * s.input_multiple for s in specs)


def check_img_size(img_size: int, name: str = "img_size", backbone: str | None = None) -> int:
    """`img_size` if it is an integer ``backbone`` (None: every registered backbone) can work at, else an error
    naming `name`: at least :func:`min_img_size`, and a multiple of the backbone's input multiple."""
    minimum = min_img_size(backbone)
    if isinstance(img_size, bool) or not isinstance(img_size, int) or img_size < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum} (the deepest feature stride of "
                         f"{backbone or 'the registered backbones'}; the paper uses {PAPER_IMG_SIZE}), "
                         f"got {img_size!r}")
    if backbone is not None and img_size % get_backbone(backbone).input_multiple:
        low, high = get_backbone(backbone).valid_sizes(img_size)
        raise ValueError(f"{name}={img_size}: backbone {backbone} takes multiples of "
                         f"{get_backbone(backbone).input_multiple}; the nearest valid sizes are {low} and {high}")
    return img_size


# -- reading the user's files ------------------------------------------------------------------------------
def _read_oriented(path: Path, mode: str) -> tuple[Image.Image, int]:
    """The image as viewers show it (EXIF orientation applied), converted to `mode`, and its EXIF orientation
    (1 = none)."""
    image = open_image(path, None)
    orientation = int(image.getexif().get(EXIF_ORIENTATION, 1))
    return ImageOps.exif_transpose(image).convert(mode), orientation


def read_image(path: str | os.PathLike) -> Image.Image:
    """A user's image as PIL RGB, oriented as viewers show it."""
    return _read_oriented(Path(path), "RGB")[0]


def read_mask(path: str | os.PathLike) -> np.ndarray:
    """A user's support mask (H, W) bool (grey >= 128 is foreground), oriented as viewers show it."""
    return np.asarray(_read_oriented(Path(path), "L")[0]) >= 128


def _stored(size: tuple[int, int], orientation: int) -> tuple[int, int]:
    return size[::-1] if orientation in EXIF_TRANSPOSED else size


def read_support_pair(image_path: str | os.PathLike, mask_path: str | os.PathLike) -> tuple[Image.Image, np.ndarray]:
    """A support image (PIL RGB) and its mask (H, W) bool at the same size, both as viewers show them."""
    image_path, mask_path = Path(image_path), Path(mask_path)
    image, image_orientation = _read_oriented(image_path, "RGB")
    mask_image, mask_orientation = _read_oriented(mask_path, "L")
    if mask_image.size != image.size:
        message = (f"support mask {mask_path} is {mask_image.width}x{mask_image.height} but its image {image_path} "
                   f"is {image.width}x{image.height}")
        notes = [f"{path} has EXIF orientation {o} (stored {'x'.join(map(str, _stored(im.size, o)))}, shown rotated "
                 "or flipped by image viewers; it is applied here)"
                 for path, im, o in ((image_path, image, image_orientation), (mask_path, mask_image, mask_orientation))
                 if o != 1]
        if notes:
            message += ("; " + "; ".join(notes) + ". Draw the mask on the image as viewers show it, or save the "
                        "image without its EXIF orientation")
        raise ValueError(message)
    mask = np.asarray(mask_image) >= 128
    if not mask.any():
        raise ValueError(f"support mask {mask_path} has no foreground pixel (foreground is grey >= 128, "
                         "e.g. a 0/255 PNG)")
    return image, mask


def read_support(image_path: str | os.PathLike, mask_path: str | os.PathLike,
                 img_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A support pair as model inputs: image (3, s, s) and mask (s, s)."""
    image, mask = read_support_pair(image_path, mask_path)
    size = (img_size, img_size)
    return image_to_tensor(image, size), mask_to_tensor(mask, size)


def read_supports(pairs: Sequence[tuple[str | os.PathLike, str | os.PathLike]], img_size: int,
                  device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """K support pairs as a batch of one episode: images (1, K, 3, s, s), masks (1, K, s, s)."""
    if not pairs:
        raise ValueError("at least one support (image, mask) pair is needed")
    tensors = [read_support(image, mask, img_size) for image, mask in pairs]
    return (torch.stack([t[0] for t in tensors])[None].to(device),
            torch.stack([t[1] for t in tensors])[None].to(device))


# -- prediction on tensors ---------------------------------------------------------------------------------
def episode_logits(model: HSNet, query_taps: list[torch.Tensor], query_feats: dict[int, torch.Tensor],
                   support_taps: list[torch.Tensor], support_mask: torch.Tensor) -> torch.Tensor:
    """The learner's 1-shot logits (B, 2, h, w) from backbone taps computed beforehand (``model.extract_taps``;
    ``query_feats = model.correlation.query_features(query_taps)``): a new support mask needs no backbone pass."""
    support_feats = model.correlation.support_features(support_taps, support_mask)
    return model.hpn_learner(model.correlation(query_feats, support_feats, model._sizes(query_taps)))


def upsample(logits: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """Learner logits to the output size, as :meth:`HSNet.predict_mask` resizes them (bilinear, corners aligned, in
    the logits' precision), as float."""
    return F.interpolate(logits, tuple(size), mode="bilinear", align_corners=True).float()


def class_decision(logits: Sequence[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """One class's K upsampled 1-shot logits (B, 2, H, W) -> its binary mask (B, H, W) by the K-shot vote of
    :meth:`HSNet.predict_mask`, and its foreground probability (B, H, W): the mean softmax over the K."""
    votes = torch.stack([l.argmax(dim=1) for l in logits]).sum(0).float()
    probability = torch.stack([l.softmax(dim=1)[:, 1] for l in logits]).mean(0)
    return vote(votes), probability


def label_map(masks: torch.Tensor, probabilities: torch.Tensor) -> torch.Tensor:
    """C classes' binary masks and foreground probabilities (B, C, H, W) -> labels (B, H, W) int64: 0 where no
    class is foreground, else 1 + the index of the foreground class with the highest probability (the lowest
    index on an exact tie)."""
    score = torch.where(masks.bool(), probabilities, torch.full_like(probabilities, -1.0))
    best = score.argmax(dim=1)  # the first maximum on ties
    return torch.where(masks.bool().any(dim=1), best + 1, torch.zeros_like(best))


@torch.no_grad()
def predict_labels(model: HSNet, query_img: torch.Tensor,
                   class_supports: Sequence[tuple[torch.Tensor, torch.Tensor]],
                   original_size: Sequence[int] | None = None) -> dict[str, torch.Tensor]:
    """Several classes at once: query (B, 3, s, s) and per class its supports ((B, K_c, 3, s, s), (B, K_c, s, s))
    -> {"labels": (B, H, W) int64, "masks": (B, C, H, W) int64 (each class's own K-shot decision, equal to
    ``predict_mask`` on its supports), "probabilities": (B, C, H, W)} at the input or the original size."""
    if not class_supports:
        raise ValueError("at least one class (with its supports) is needed")
    size = tuple(original_size) if original_size is not None else tuple(query_img.shape[-2:])
    query_taps = model.extract_taps(query_img)
    query_feats = model.correlation.query_features(query_taps)
    masks, probabilities = [], []
    for support_imgs, support_masks in class_supports:
        logits = [upsample(episode_logits(model, query_taps, query_feats, model.extract_taps(support_imgs[:, k]),
                                          support_masks[:, k]), size)
                  for k in range(support_imgs.shape[1])]
        mask, probability = class_decision(logits)
        masks.append(mask)
        probabilities.append(probability)
    masks, probabilities = torch.stack(masks, dim=1), torch.stack(probabilities, dim=1)
    return {"labels": label_map(masks, probabilities), "masks": masks, "probabilities": probabilities}


# -- writing -----------------------------------------------------------------------------------------------
def save_png(image: Image.Image, path: Path) -> Path:
    """Write a PNG atomically."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    atomic_write(path, buffer.getvalue())
    return path


def _query_stems(queries: Sequence[str | os.PathLike]) -> list[str]:
    if not queries:
        raise ValueError("at least one query image is needed")
    stems = [Path(q).stem for q in queries]
    duplicates = sorted({s for s in stems if stems.count(s) > 1})
    if duplicates:
        raise ValueError(f"query images share the file name(s) {duplicates}: their outputs would overwrite each other")
    return stems


def _read_query(path: str | os.PathLike, img_size: int, device: torch.device) -> tuple[Image.Image, torch.Tensor]:
    image = read_image(path)
    return image, image_to_tensor(image, (img_size, img_size))[None].to(device)  # (1, 3, s, s)


def predict(model: HSNet, supports: Sequence[tuple[str | os.PathLike, str | os.PathLike]],
            queries: Sequence[str | os.PathLike], out_dir: str | os.PathLike, img_size: int = PAPER_IMG_SIZE,
            device: str | torch.device | None = None, progress: bool = True) -> list[dict[str, Any]]:
    """Segment every query with the K = len(supports) support pairs; returns one record per query
    (query, mask, overlay paths and the foreground fraction)."""
    check_img_size(img_size, backbone=model.config.backbone)
    stems = _query_stems(queries)
    device = pick_device(device)
    model = model.to(device).eval()
    support_imgs, support_masks = read_supports(supports, img_size, device)
    out_dir = Path(out_dir)
    records = []
    for query_path, stem in tqdm(list(zip(queries, stems)), desc="predict", disable=not progress):
        image, query = _read_query(query_path, img_size, device)
        with torch.inference_mode():
            mask = model.predict_mask(query, support_imgs, support_masks, original_size=(image.height, image.width))
        mask = mask[0].cpu().numpy().astype(bool)  # (H0, W0)
        mask_path = save_png(Image.fromarray(np.where(mask, 255, 0).astype(np.uint8)), out_dir / f"{stem}_mask.png")
        overlay_path = save_png(viz.to_pil(viz.overlay(image, mask, alpha=OVERLAY_ALPHA)), out_dir / f"{stem}_overlay.png")
        records.append({"query": str(query_path), "mask": str(mask_path), "overlay": str(overlay_path),
                        "foreground": float(mask.mean())})
    return records


def predict_classes(model: HSNet, classes: Mapping[str, Sequence[tuple[str | os.PathLike, str | os.PathLike]]],
                    queries: Sequence[str | os.PathLike], out_dir: str | os.PathLike,
                    img_size: int = PAPER_IMG_SIZE, device: str | torch.device | None = None,
                    progress: bool = True) -> list[dict[str, Any]]:
    """Segment every query into the classes of `classes` (name -> its support pairs), by the rule of the module
    docstring. Writes ``classes.json`` and per query ``STEM_labels.png`` (uint8 labels, 0 = background) and
    ``STEM_overlay.png`` (with a legend); returns one record per query with each class's pixel fraction."""
    check_img_size(img_size, backbone=model.config.backbone)
    if not classes:
        raise ValueError("at least one class (with its supports) is needed")
    names = list(classes)
    if len(names) > 255:
        raise ValueError(f"at most 255 classes fit a PNG label map, got {len(names)}")
    stems = _query_stems(queries)
    device = pick_device(device)
    model = model.to(device).eval()
    class_supports = [read_supports(classes[name], img_size, device) for name in names]
    colors = viz.class_colors(len(names))
    out_dir = Path(out_dir)
    atomic_write(out_dir / "classes.json", json.dumps({"0": "background", **{str(c): n for c, n in
                                                                            enumerate(names, 1)}}, indent=1))
    records = []
    for query_path, stem in tqdm(list(zip(queries, stems)), desc="predict", disable=not progress):
        image, query = _read_query(query_path, img_size, device)
        with torch.inference_mode():
            labels = predict_labels(model, query, class_supports, (image.height, image.width))["labels"]
        labels = labels[0].cpu().numpy().astype(np.uint8)  # (H0, W0)
        labels_path = save_png(Image.fromarray(labels), out_dir / f"{stem}_labels.png")
        tinted = viz.to_pil(viz.label_overlay(image, labels, colors, alpha=OVERLAY_ALPHA))
        overlay_path = save_png(viz.legend_panel(tinted, names, colors), out_dir / f"{stem}_overlay.png")
        records.append({"query": str(query_path), "labels": str(labels_path), "overlay": str(overlay_path),
                        "foreground": {n: float((labels == c).mean()) for c, n in enumerate(names, 1)}})
    return records


def episode_panel(item: dict[str, Any], pred: torch.Tensor) -> Image.Image:
    """Supports with their masks | query with its ground truth (green) | query with the prediction (red),
    side by side at the model's input size; pred (H, W) {0, 1}."""
    tiles = [viz.overlay(img, mask, viz.SUPPORT, OVERLAY_ALPHA)
             for img, mask in zip(item["support_imgs"], item["support_masks"])]
    size = tuple(item["query_img"].shape[-2:])
    gt = F.interpolate(item["query_mask"][None, None].float(), size=size, mode="nearest")[0, 0]
    pred = F.interpolate(pred[None, None].float().cpu(), size=size, mode="nearest")[0, 0]
    tiles += [viz.overlay(item["query_img"], gt, viz.GROUND_TRUTH, OVERLAY_ALPHA),
              viz.overlay(item["query_img"], pred, alpha=OVERLAY_ALPHA)]
    return viz.to_pil(np.concatenate(tiles, axis=1))  # every tile at the input size


# -- command line ------------------------------------------------------------------------------------------
def _img_size_arg(value: str) -> int:
    try:
        return check_img_size(int(value), "--img-size")
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from err


class _ClassAction(argparse.Action):
    """--class NAME: starts the support group of a new class."""

    def __call__(self, parser, namespace, name, option_string=None):
        groups = list(getattr(namespace, self.dest) or [])
        if groups and groups[-1][0] is None:
            parser.error("--support given before the first --class: with --class, every --support follows its class")
        if groups and not groups[-1][1]:
            parser.error(f"--class {groups[-1][0]} has no --support")
        if name in [g[0] for g in groups]:
            parser.error(f"--class {name} given twice")
        namespace.support_groups = groups + [(name, [])]


class _SupportAction(argparse.Action):
    """--support IMG MASK [IMG MASK ...]: pairs for the current class (or the single unnamed one)."""

    def __call__(self, parser, namespace, paths, option_string=None):
        if len(paths) % 2:
            parser.error(f"--support takes IMG MASK pairs; got {len(paths)} path(s): {' '.join(paths)}")
        groups = list(getattr(namespace, self.dest) or [])
        if not groups:
            groups = [(None, [])]
        name, pairs = groups[-1]
        groups[-1] = (name, pairs + list(zip(paths[0::2], paths[1::2])))
        namespace.support_groups = groups


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``python -m hsnetlib predict`` (the caller adds --device / --debug and the dispatch)."""
    parser.description = (
        "Segment query images given annotated support images. One class: --support IMG MASK [IMG MASK ...] "
        "(K-shot voting; writes STEM_mask.png (0/255) and STEM_overlay.png). Several classes: repeat --class NAME "
        "--support IMG MASK [--support IMG MASK ...] (writes STEM_labels.png: 0 background, c = the c-th --class; "
        "STEM_overlay.png with a legend; classes.json); a pixel is background where no class's episode says "
        "foreground, else the class with the highest foreground probability (the first given on a tie). Masks "
        "are greyscale, foreground >= 128 (e.g. 0/255 PNG). Outputs are at each query's original size; EXIF "
        "orientation is applied to every image and mask.")
    parser.add_argument("--load", required=True, help="checkpoint: hsnetlib (best.pt, last.pt, HSNet.save) or the "
                                                      "authors' best_model.pt (detected automatically)")
    parser.add_argument("--backbone", choices=list_backbones(), default=None,
                        help="expected backbone; a checkpoint of another one is an error (default: the checkpoint's)")
    parser.add_argument("--img-size", type=_img_size_arg, default=PAPER_IMG_SIZE,
                        help=f"square input size in pixels, >= {min_img_size()} and valid for the checkpoint's "
                             f"backbone (a ViT's: multiples of 14; default: {PAPER_IMG_SIZE})")
    parser.add_argument("--class", dest="support_groups", action=_ClassAction, default=None, metavar="NAME",
                        help="start the supports of a class (repeatable, for several classes at once)")
    parser.add_argument("--support", dest="support_groups", action=_SupportAction, nargs="+", required=True,
                        metavar="IMG MASK", help="support image and mask pairs: --support IMG MASK [IMG MASK ...] "
                                                 "(repeatable; after a --class, that class's supports)")
    parser.add_argument("--query", nargs="+", action="extend", required=True, metavar="IMG", help="query images")
    parser.add_argument("--out", required=True, help="output directory")
    parser.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")


def run_cli(args: argparse.Namespace) -> int:
    """Run the parsed ``predict`` options; prints one line per query."""
    groups = args.support_groups
    if groups[-1][0] is not None and not groups[-1][1]:
        raise ValueError(f"--class {groups[-1][0]} has no --support")
    model = load_model(args.load, backbone=args.backbone)
    check_img_size(args.img_size, "--img-size", model.config.backbone)
    device = getattr(args, "device", None)
    if groups[0][0] is None:
        for r in predict(model, groups[0][1], args.query, args.out, img_size=args.img_size, device=device,
                         progress=args.progress):
            print(f"{r['query']}: foreground {100 * r['foreground']:.1f}% -> {r['mask']}")
        return 0
    for r in predict_classes(model, dict(groups), args.query, args.out, img_size=args.img_size, device=device,
                             progress=args.progress):
        shares = ", ".join(f"{name} {100 * share:.1f}%" for name, share in r["foreground"].items())
        print(f"{r['query']}: {shares} -> {r['labels']}")
    return 0
