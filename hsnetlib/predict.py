"""Segment one's own images with a trained HSNet, and draw overlays.

``predict(model, supports, queries, out_dir)`` takes support (image, mask) file pairs and query image
files, runs K-shot prediction (:meth:`HSNet.predict_mask`) with the datasets' input transform
(RGB, ``Resize((s, s))`` bilinear, ImageNet normalisation) and writes, per query, at the query's
original size: ``STEM_mask.png`` (greyscale, 0 background / 255 foreground) and ``STEM_overlay.png``
(the prediction tinted red over the image).

Support masks are greyscale images whose pixels >= 128 are foreground (the FSS-1000 convention,
so 0/255 masks work; a mask saved as 0/1 has no foreground and is rejected).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from tqdm.auto import tqdm

from hsnetlib.data import IMAGENET_MEAN, IMAGENET_STD, image_to_tensor, mask_to_tensor, read_grey_mask, read_rgb
from hsnetlib.model import FORMAT, HSNet
from hsnetlib.utils import pick_device

OVERLAY_COLOUR = (255, 0, 0)
OVERLAY_ALPHA = 0.5


def load_model(path: str | os.PathLike, backbone: str | None = None, map_location: str | torch.device = "cpu") -> HSNet:
    """An hsnetlib checkpoint (``HSNet.save`` / a training run's best.pt or last.pt) or an authors'
    released ``best_model.pt``, told apart automatically. ``backbone``, when given, must match."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:
        raise ValueError(f"cannot read checkpoint {path}: {type(err).__name__}: {err}") from err
    if not (isinstance(payload, dict) and payload.get("format") == FORMAT):
        return HSNet.from_official_checkpoint(path, backbone=backbone, map_location=map_location)
    del payload
    model = HSNet.load(path, map_location=map_location)
    if backbone is not None and model.config.backbone != backbone:
        raise ValueError(f"{path} is a checkpoint of an HSNet with a {model.config.backbone} backbone, not {backbone}")
    return model


def read_support(image_path: str | os.PathLike, mask_path: str | os.PathLike,
                 img_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A support pair as model inputs: image (3, s, s) and mask (s, s)."""
    image_path, mask_path = Path(image_path), Path(mask_path)
    image, mask = read_rgb(image_path), read_grey_mask(mask_path)
    if mask.shape != (image.height, image.width):
        raise ValueError(f"support mask {mask_path} is {mask.shape[1]}x{mask.shape[0]} but its image {image_path} "
                         f"is {image.width}x{image.height}")
    if not mask.any():
        raise ValueError(f"support mask {mask_path} has no foreground pixel (foreground is grey >= 128, "
                         "e.g. a 0/255 PNG)")
    size = (img_size, img_size)
    return image_to_tensor(image, size), mask_to_tensor(mask, size)


def overlay(image: Image.Image, mask: np.ndarray, colour: tuple[int, int, int] = OVERLAY_COLOUR,
            alpha: float = OVERLAY_ALPHA) -> Image.Image:
    """The image with the (H, W) bool mask tinted in ``colour``."""
    rgb = np.asarray(image.convert("RGB"), dtype=np.float32)
    tinted = np.where(mask[..., None], (1 - alpha) * rgb + alpha * np.asarray(colour, np.float32), rgb)
    return Image.fromarray(tinted.round().astype(np.uint8))


def denormalize(image: torch.Tensor) -> Image.Image:
    """A normalised (3, H, W) input tensor back to a PIL image."""
    mean, std = torch.tensor(IMAGENET_MEAN).view(3, 1, 1), torch.tensor(IMAGENET_STD).view(3, 1, 1)
    pixels = ((image.cpu().float() * std + mean).clamp(0, 1) * 255).round().byte()
    return Image.fromarray(pixels.permute(1, 2, 0).numpy())


def episode_panel(item: dict[str, Any], pred: torch.Tensor) -> Image.Image:
    """Supports with their masks | query with its ground truth (green) | query with the prediction (red),
    side by side at the model's input size; pred (H, W) {0, 1}."""
    tiles = [overlay(denormalize(img), mask.numpy() > 0.5)
             for img, mask in zip(item["support_imgs"], item["support_masks"])]
    query = denormalize(item["query_img"])
    size = query.size[::-1]
    gt = F.interpolate(item["query_mask"][None, None].float(), size=size, mode="nearest")[0, 0]
    pred = F.interpolate(pred[None, None].float().cpu(), size=size, mode="nearest")[0, 0]
    tiles += [overlay(query, gt.numpy() > 0.5, colour=(0, 200, 0)), overlay(query, pred.numpy() > 0.5)]
    panel = Image.new("RGB", (sum(t.width for t in tiles), max(t.height for t in tiles)))
    x = 0
    for tile in tiles:
        panel.paste(tile, (x, 0))
        x += tile.width
    return panel


def predict(model: HSNet, supports: Sequence[tuple[str | os.PathLike, str | os.PathLike]],
            queries: Sequence[str | os.PathLike], out_dir: str | os.PathLike, img_size: int = 400,
            device: str | torch.device | None = None, progress: bool = True) -> list[dict[str, Any]]:
    """Segment every query with the K = len(supports) support pairs; returns one record per query
    (query, mask, overlay paths and the foreground fraction)."""
    if not supports:
        raise ValueError("at least one support (image, mask) pair is needed")
    if not queries:
        raise ValueError("at least one query image is needed")
    stems = [Path(q).stem for q in queries]
    duplicates = sorted({s for s in stems if stems.count(s) > 1})
    if duplicates:
        raise ValueError(f"query images share the file name(s) {duplicates}: their outputs would overwrite each other")
    device = pick_device(device)
    model = model.to(device).eval()
    pairs = [read_support(image, mask, img_size) for image, mask in supports]
    support_imgs = torch.stack([p[0] for p in pairs])[None].to(device)  # (1, K, 3, s, s)
    support_masks = torch.stack([p[1] for p in pairs])[None].to(device)  # (1, K, s, s)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    records = []
    for query_path, stem in tqdm(list(zip(queries, stems)), desc="predict", disable=not progress):
        image = read_rgb(Path(query_path))
        query = image_to_tensor(image, (img_size, img_size))[None].to(device)  # (1, 3, s, s)
        with torch.inference_mode():
            mask = model.predict_mask(query, support_imgs, support_masks, original_size=(image.height, image.width))
        mask = mask[0].cpu().numpy().astype(bool)  # (H0, W0)
        mask_path, overlay_path = out_dir / f"{stem}_mask.png", out_dir / f"{stem}_overlay.png"
        Image.fromarray(np.where(mask, 255, 0).astype(np.uint8)).save(mask_path)
        overlay(image, mask).save(overlay_path)
        records.append({"query": str(query_path), "mask": str(mask_path), "overlay": str(overlay_path),
                        "foreground": float(mask.mean())})
    return records


def add_arguments(parser) -> None:
    """The options of ``python -m hsnetlib predict`` (hsnetlib.cli wires this parser and :func:`run_cli`)."""
    from hsnetlib.backbone import BACKBONES
    from hsnetlib.model import PAPER_IMG_SIZE

    parser.description = ("Segment query images with K support (image, mask) pairs. Masks are greyscale, "
                          "foreground >= 128 (e.g. 0/255 PNG). Writes STEM_mask.png (0/255) and STEM_overlay.png "
                          "per query, at the query's original size.")
    parser.add_argument("--load", required=True, help="checkpoint: hsnetlib (best.pt, last.pt, HSNet.save) or the "
                                                      "authors' best_model.pt (detected automatically)")
    parser.add_argument("--backbone", choices=sorted(BACKBONES), default=None,
                        help="expected backbone; a checkpoint of another one is an error (default: the checkpoint's)")
    parser.add_argument("--img-size", type=int, default=PAPER_IMG_SIZE,
                        help=f"square input size in pixels (default: {PAPER_IMG_SIZE})")
    parser.add_argument("--support", nargs="+", action="extend", required=True, metavar="IMG MASK",
                        help="support image and mask pairs: --support IMG MASK [IMG MASK ...] (repeatable)")
    parser.add_argument("--query", nargs="+", action="extend", required=True, metavar="IMG", help="query images")
    parser.add_argument("--out", required=True, help="output directory")
    parser.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")
    parser.set_defaults(predict_parser=parser)


def run_cli(args) -> int:
    """``python -m hsnetlib predict``: the parsed options of :func:`add_arguments` (plus ``device``, if given)."""
    if len(args.support) % 2:
        args.predict_parser.error(f"--support takes IMG MASK pairs; got {len(args.support)} paths")
    pairs = list(zip(args.support[0::2], args.support[1::2]))
    model = load_model(args.load, backbone=args.backbone)
    records = predict(model, pairs, args.query, args.out, img_size=args.img_size,
                      device=getattr(args, "device", None), progress=args.progress)
    for r in records:
        print(f"{r['query']}: foreground {100 * r['foreground']:.1f}% -> {r['mask']}")
    return 0
