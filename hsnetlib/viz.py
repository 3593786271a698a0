"""Plotting helpers shared by the notebooks (matplotlib).

* :func:`denormalize`: a normalized input tensor back to RGB; :func:`overlay` (one mask) and
  :func:`label_overlay` (a label map) tint any image -- input tensor, PIL image or array -- and
  :func:`to_pil` / :func:`legend_panel` turn the result into a PIL image (with a class legend);
  :func:`show_mask` draws an overlay with the mask's outline on a matplotlib axis.
* :func:`plot_episode`: supports with their masks, the query with its ground truth, and predictions
  side by side (e.g. 1-shot beside 5-shot, as in the paper's Fig. A12).
* :func:`correlation_slice`: for a query position, the 2D slice of every layer's 4D correlation over
  the support image, per pyramid level; or the other direction (a support position over the query);
  :func:`correlation_slices` draws both.
* :func:`squeezed_views`: what the encoder makes of the hypercorrelation: the squeezed tensor of each
  level, the mixed tensors and the context map, reduced to 2D maps over the query.
* :func:`draw_learning_curves`: the one drawing of learning curves (mIoU or loss per epoch of trainings, a
  colour per variant, validation solid and training dashed), which the figures below, the studies'
  (:func:`hsnetlib.suite.study.curves_figure`) and the results' (:mod:`hsnetlib.results.figures`) call;
  :func:`learning_curves`: loss and mIoU per epoch from a training history; :class:`LiveCurves` redraws
  them after every epoch of a running training (the ``on_epoch`` callback of :func:`hsnetlib.train.train`).
* :func:`ablation_overview`: an ablation study's mIoU per variant with intervals, and its learning curves.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch
from PIL import Image

from hsnetlib.data import IMAGENET_MEAN, IMAGENET_STD

FOREGROUND = (1.0, 0.2, 0.2)
GROUND_TRUTH = (0.2, 1.0, 0.3)
SUPPORT = (0.2, 0.5, 1.0)


def denormalize(img: torch.Tensor) -> np.ndarray:
    """A normalized (3, H, W) input tensor -> (H, W, 3) RGB array in [0, 1]."""
    mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(3, 1, 1)
    return (img.detach().cpu().float() * std + mean).clamp(0, 1).permute(1, 2, 0).numpy()


def rgb_array(image) -> np.ndarray:
    """Any image the helpers draw -- a normalized (3, H, W) input tensor, a PIL image, or an (H, W, 3) array
    (uint8 0-255 or float 0-1) -- as a fresh (H, W, 3) float RGB array in [0, 1]."""
    if isinstance(image, torch.Tensor):
        return denormalize(image)
    if isinstance(image, Image.Image):
        return np.asarray(image.convert("RGB"), dtype=np.float64) / 255
    array = np.asarray(image)
    return array.astype(np.float64) / 255 if array.dtype == np.uint8 else array.astype(np.float64, copy=True)


def to_pil(rgb: np.ndarray) -> Image.Image:
    """An (H, W, 3) float RGB array in [0, 1] as an 8-bit PIL image."""
    return Image.fromarray((np.clip(rgb, 0, 1) * 255).round().astype(np.uint8))


def _numpy(mask) -> np.ndarray:
    return mask.detach().cpu().numpy() if isinstance(mask, torch.Tensor) else np.asarray(mask)


def overlay(image, mask, color: Sequence[float] = FOREGROUND, alpha: float = 0.3) -> np.ndarray:
    """The image (see :func:`rgb_array`) with `mask` (H, W; > 0.5 = on; tensor or array, None = no mask) tinted
    in `color` (RGB in [0, 1]): an (H, W, 3) float array in [0, 1] (:func:`to_pil` makes it a PIL image)."""
    rgb = rgb_array(image)
    if mask is None:
        return rgb
    on = _numpy(mask)[: rgb.shape[0], : rgb.shape[1]] > 0.5
    rgb[on] = (1 - alpha) * rgb[on] + alpha * np.asarray(color, dtype=np.float64)
    return rgb


def label_overlay(image, labels, colors: Sequence[Sequence[float]], alpha: float = 0.5) -> np.ndarray:
    """The image with a label map (H, W; 0 = background, c = the c-th of `colors`) tinted class by class."""
    labels = _numpy(labels)
    rgb = rgb_array(image)
    for c, color in enumerate(colors, 1):
        rgb = overlay(rgb, labels == c, color, alpha)
    return rgb


def class_colors(n: int) -> list[tuple[float, float, float]]:
    """`n` distinguishable colours (matplotlib's tab10, then tab20), one per class of a label map."""
    palette = list(plt.get_cmap("tab10").colors) + list(plt.get_cmap("tab20").colors[1::2])
    if n > len(palette):
        raise ValueError(f"at most {len(palette)} classes can be told apart by colour, got {n}")
    return [tuple(float(v) for v in palette[i]) for i in range(n)]


def legend_panel(image: Image.Image, names: Sequence[str], colors: Sequence[Sequence[float]]) -> Image.Image:
    """`image` with a legend strip below it: one colour swatch and class name per class (PIL only, so it can be
    written without a figure)."""
    from PIL import ImageDraw

    row = 16
    panel = Image.new("RGB", (image.width, image.height + row * (len(names) + 1)), "white")
    panel.paste(image, (0, 0))
    draw = ImageDraw.Draw(panel)
    for i, (name, color) in enumerate([("background", (1.0, 1.0, 1.0))] + list(zip(names, colors))):
        y = image.height + 2 + i * row
        draw.rectangle((4, y, 4 + row - 4, y + row - 4), fill=tuple(int(round(255 * v)) for v in color),
                       outline="black")
        draw.text((row + 6, y), name, fill="black")
    return panel


def show_mask(ax, img: torch.Tensor, mask: torch.Tensor | None, title: str = "",
              color: Sequence[float] = FOREGROUND) -> None:
    """The image, lightly tinted where the mask is on, with the mask's outline."""
    ax.imshow(overlay(img, mask, color))
    if mask is not None and (mask > 0.5).any() and not (mask > 0.5).all():
        ax.contour(mask.detach().cpu().numpy() > 0.5, levels=[0.5], colors=[color], linewidths=1.2)
    ax.set_title(title, fontsize=8)
    ax.axis("off")


def plot_episode(item: Mapping[str, Any], predictions: Mapping[str, torch.Tensor], title: str = ""):
    """One row: each support with its mask, the query with ground truth, then each prediction.

    item: a data set item (query_img, query_mask, support_imgs, support_masks, ...) at the input size;
    predictions: label -> (H, W) binary mask, e.g. {"1-shot": ..., "5-shot": ...}.
    """
    supports = item["support_imgs"].shape[0]
    n = supports + 1 + len(predictions)
    fig, axes = plt.subplots(1, n, figsize=(2.2 * n, 2.4), squeeze=False)
    axes = axes[0]
    for k in range(supports):
        show_mask(axes[k], item["support_imgs"][k], item["support_masks"][k], f"support {k + 1}", SUPPORT)
    show_mask(axes[supports], item["query_img"], item["query_mask"], "query, ground truth", GROUND_TRUTH)
    for ax, (label, pred) in zip(axes[supports + 1:], predictions.items()):
        show_mask(ax, item["query_img"], pred, f"prediction, {label}")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig


def _position(fraction: Sequence[float], size: Sequence[int]) -> tuple[int, int]:
    """(row, col) in a (H, W) grid for a position given as fractions of the height and width."""
    if not all(0 <= f <= 1 for f in fraction):
        raise ValueError(f"positions are fractions of the image in [0, 1], got {tuple(fraction)}")
    return tuple(min(int(f * s), s - 1) for f, s in zip(fraction, size))


DIRECTIONS = ("query -> support", "support -> query")


def correlation_slices(pyramid: Sequence[torch.Tensor], levels: Sequence[int], query_img: torch.Tensor,
                       support_img: torch.Tensor, query_pos: Sequence[float], support_pos: Sequence[float],
                       max_layers: int = 6):
    """Two figures of 2D slices of the hypercorrelation pyramid (deepest level first, as returned by
    ``HSNet.hypercorrelation``; `levels` their pyramid levels, e.g. (3, 2, 1)) of one episode (batch 0):
    :func:`correlation_slice` at the query position `query_pos` and at the support position `support_pos`."""
    return [correlation_slice(pyramid, levels, query_img, support_img, pos, direction, max_layers)
            for direction, pos in zip(DIRECTIONS, (query_pos, support_pos))]


def correlation_slice(pyramid: Sequence[torch.Tensor], levels: Sequence[int], query_img: torch.Tensor,
                      support_img: torch.Tensor, pos: Sequence[float], direction: str = DIRECTIONS[0],
                      max_layers: int = 6):
    """One figure, a row per pyramid level, a column per layer (at most `max_layers` per level, evenly spaced):

    * "query -> support": for the query position `pos` (fractions (y, x)), C_l(x_q, :) over the support;
    * "support -> query": for the support position `pos`, C_l(:, x_s) over the query.
    """
    if direction not in DIRECTIONS:
        raise ValueError(f"unknown direction {direction!r}; choose one of {DIRECTIONS}")
    columns = max(min(c.shape[1], max_layers) for c in pyramid) + 1
    fig, axes = plt.subplots(len(pyramid), columns, figsize=(1.9 * columns, 2.0 * len(pyramid)), squeeze=False)
    for row, (corr, level) in enumerate(zip(pyramid, levels)):
        _, layers, hq, wq, hs, ws = corr.shape
        chosen = np.unique(np.linspace(0, layers - 1, min(layers, max_layers)).round().astype(int))
        if direction == DIRECTIONS[0]:
            grid = (hq, wq)
            y, x = _position(pos, grid)
            image, other, planes = query_img, support_img, corr[0, :, y, x]  # (L, Hs, Ws)
        else:
            grid = (hs, ws)
            y, x = _position(pos, grid)
            image, other, planes = support_img, query_img, corr[0, :, :, :, y, x]  # (L, Hq, Wq)
        ax = axes[row, 0]
        ax.imshow(denormalize(image))
        scale = np.array(image.shape[-2:]) / np.array(grid)
        ax.plot((x + 0.5) * scale[1], (y + 0.5) * scale[0], "r+", markersize=12, markeredgewidth=2)
        ax.set_title(f"level {level} ({grid[0]}x{grid[1]})", fontsize=8)
        ax.axis("off")
        for col in range(1, columns):
            ax = axes[row, col]
            ax.axis("off")
            if col - 1 < len(chosen):
                layer = chosen[col - 1]
                ax.imshow(denormalize(other), extent=(-0.5, planes.shape[-1] - 0.5, planes.shape[-2] - 0.5, -0.5))
                ax.imshow(planes[layer].detach().cpu().float().numpy(), cmap="magma", alpha=0.6, vmin=0)
                ax.set_title(f"layer {layer + 1}/{layers}", fontsize=7)
    fig.suptitle(f"hypercorrelation slices, {direction}", fontsize=9)
    fig.tight_layout()
    return fig


def capture_learner(model, query_img: torch.Tensor, support_img: torch.Tensor, support_mask: torch.Tensor
                    ) -> dict[str, torch.Tensor]:
    """Intermediate tensors of the learner for one 1-shot forward pass, by module name:
    squeezing blocks (encoder_layer4/3/2), mixing blocks (encoder_layer4to3/3to2) and decoder1."""
    names = [n for n in ("encoder_layer4", "encoder_layer3", "encoder_layer2", "encoder_layer4to3",
                         "encoder_layer3to2", "decoder1") if hasattr(model.hpn_learner, n)]
    captured: dict[str, torch.Tensor] = {}
    hooks = [getattr(model.hpn_learner, n).register_forward_hook(
        lambda _m, _i, out, n=n: captured.__setitem__(n, out.detach().cpu())) for n in names]
    try:
        with torch.no_grad():
            model.eval()(query_img, support_img, support_mask)
    finally:
        for hook in hooks:
            hook.remove()
    return captured


def squeezed_views(captured: Mapping[str, torch.Tensor], query_img: torch.Tensor, channels: int = 3):
    """For each captured 4D tensor (B, C, Hq, Wq, He, We): the mean over channels and the squeezed support
    dims as a map over the query, then `channels` single channels (mean over the support dims);
    for decoder1 (B, C, H, W): the channel mean and single channels."""
    fig, axes = plt.subplots(len(captured), channels + 2, figsize=(2.0 * (channels + 2), 2.1 * len(captured)),
                             squeeze=False)
    for row, (name, tensor) in enumerate(captured.items()):
        t = tensor[0]
        maps = t.mean(dim=(-2, -1)) if t.dim() == 5 else t  # (C, Hq, Wq)
        shape = "x".join(map(str, t.shape))
        axes[row, 0].imshow(denormalize(query_img))
        axes[row, 0].set_title(f"{name}\n({shape})", fontsize=7)
        panels = [("channel mean", maps.mean(0))] + [(f"channel {c}", maps[c]) for c in range(min(channels, len(maps)))]
        for col, (title, plane) in enumerate(panels, 1):
            axes[row, col].imshow(plane.numpy(), cmap="viridis")
            axes[row, col].set_title(title, fontsize=7)
        for ax in axes[row]:
            ax.axis("off")
    fig.suptitle("learner tensors over the query (support dims averaged)", fontsize=9)
    fig.tight_layout()
    return fig


SPLIT_STYLES = {"val": "-", "train": "--"}  # learning curves: validation solid, training dashed
METRIC_LABELS = {"miou": "mIoU (%)", "loss": "loss"}


def draw_learning_curves(ax, trainings: Iterable[Mapping[str, Any]], metric: str = "miou",
                         splits: Sequence[str] = ("val", "train")) -> bool:
    """The one drawing of learning curves (the training notebook's, the studies' and the results' figures call it):
    `metric` ("miou" or "loss") per epoch of every training's ``history`` (metrics.csv rows) on `ax`, one line per
    split of `splits` (validation solid, training dashed), one colour per variant ``label``; a training whose
    ``converged`` is False has "(not converged)" after its label. The legend lists the variants (when they have
    labels) and the splits. Without any history the panel says so. Returns whether a curve was drawn."""
    colours: dict[str, str] = {}
    drawn = False
    for training in trainings:
        label = str(training.get("label") or "")
        label += " (not converged)" if training.get("converged") is False else ""
        colour = colours.setdefault(label, f"C{len(colours) % 10}")
        history = list(training.get("history") or [])
        for split in splits:
            rows = [row for row in history if f"{split}_{metric}" in row]
            if rows:
                ax.plot([r["epoch"] for r in rows], [r[f"{split}_{metric}"] for r in rows], SPLIT_STYLES[split],
                        color=colour, marker="o", markersize=4)
                drawn = True
    if not drawn:
        ax.text(0.5, 0.5, "no training history", ha="center", va="center", transform=ax.transAxes, fontsize=10,
                color="grey")
        return False
    from matplotlib.lines import Line2D

    handles = [Line2D([], [], color=c, label=v) for v, c in colours.items() if v] + \
        ([Line2D([], [], color="grey", linestyle=SPLIT_STYLES[s], label=s) for s in splits] if len(splits) > 1 else [])
    if handles:
        ax.legend(handles=handles, fontsize=7)
    ax.set(xlabel="epoch", ylabel=METRIC_LABELS[metric])
    ax.xaxis.get_major_locator().set_params(integer=True)
    return True


def learning_curves(history: Sequence[Mapping[str, float]], title: str = ""):
    """Loss and mIoU per epoch (train and validation) from a training history (metrics.csv rows)."""
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.2))
    for ax, metric, name in zip(axes, ("loss", "miou"), ("cross-entropy", "mIoU")):
        draw_learning_curves(ax, [{"history": history}], metric)
        ax.set_title(name)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig


class LiveCurves:
    """An ``on_epoch`` callback for :func:`hsnetlib.train.train` that redraws :func:`learning_curves` in the
    notebook after every epoch. A resumed training reports only its new epochs: the earlier ones are read
    from `run_dir`/metrics.csv when the first report arrives."""

    def __init__(self, title: str = "", run_dir: str | None = None):
        self.title, self.run_dir = title, run_dir
        self.rows: dict[int, Mapping[str, float]] = {}

    def __call__(self, row: Mapping[str, float]) -> None:
        if not self.rows and self.run_dir is not None and row["epoch"] > 0:
            self.rows = {r["epoch"]: r for r in _metrics_rows(self.run_dir) if r["epoch"] < row["epoch"]}
        self.rows[row["epoch"]] = row
        self._draw()

    def show(self, history: Sequence[Mapping[str, float]]):
        """Draw a whole history in place of the live curves (e.g. the summary of a training found in the cache,
        which reported no epochs); returns the figure, to be saved."""
        self.rows = {row["epoch"]: row for row in history}
        return self._draw()

    def _draw(self):
        from IPython.display import clear_output, display

        fig = learning_curves([self.rows[e] for e in sorted(self.rows)], self.title)
        clear_output(wait=True)
        display(fig)
        plt.close(fig)
        return fig


def _metrics_rows(run_dir: str) -> list[dict[str, float]]:
    path = Path(run_dir) / "metrics.csv"
    return pd.read_csv(path).to_dict("records") if path.is_file() else []


def ablation_overview(table, trainings: Sequence[Mapping[str, Any]], title: str = ""):
    """An ablation at a glance: mIoU per variant and shot with its bootstrap interval (not-converged variants
    hatched), and every variant's validation mIoU per epoch. `table`: :func:`hsnetlib.suite.study.variant_table`;
    `trainings`: the run record's training entries (label, history)."""
    fig, (bars, curves) = plt.subplots(1, 2, figsize=(10, 3.4))
    labels = list(dict.fromkeys(table["label"]))
    shots = sorted(table["nshot"].unique())
    width = 0.8 / len(shots)
    for i, shot in enumerate(shots):
        rows = table[table["nshot"] == shot].set_index("label").loc[labels]
        x = np.arange(len(labels)) + (i - (len(shots) - 1) / 2) * width
        errors = [rows["miou"] - rows["ci95_low"], rows["ci95_high"] - rows["miou"]]
        drawn = bars.bar(x, rows["miou"], width, yerr=errors, capsize=3, label=f"{shot}-shot")
        for patch, ok in zip(drawn, rows["converged"]):
            if not ok:
                patch.set_hatch("//")
    bars.set_xticks(np.arange(len(labels)), labels)
    bars.set(ylabel="mIoU (%)", title="test mIoU, 95% bootstrap interval (hatched: not converged)")
    bars.title.set_fontsize(8)
    bars.legend(fontsize=8)
    draw_learning_curves(curves, trainings, splits=("val",))
    curves.set(ylabel="validation mIoU (%)", title="learning curves")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig
