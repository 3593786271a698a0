"""HSNet on one's own images in JupyterLab: draw the support masks, see the query's prediction, click to read the
hypercorrelation (notebooks/12_interactive.ipynb).

* :class:`Session` -- the computation, without widgets: a query and up to :data:`MAX_SHOTS` supports with their
  masks; the 1-shot prediction (support 1) and the K-shot vote (Sec. 4.5) over every support with a mask; the
  hypercorrelation pyramid (Eq. 2) of a support for the slices. Backbone taps are cached per image content, so a
  changed mask costs the correlation and the learner only (:func:`hsnetlib.predict.episode_logits`), and each
  support's logits are cached per mask, so a stroke on one support recomputes that support alone. Under
  ``bf16="auto"`` the model runs in ``torch.autocast(bfloat16)`` where the device supports it.
* :class:`InteractiveDemo` -- the widgets (ipywidgets 8, ipycanvas): loading images (upload, path, benchmark
  episode), a canvas per support with brush, eraser and box tools, the query canvas (a click shows the
  query -> support slices), the prediction image (1-shot beside K-shot) and the slice figure. Scripted use
  (headless runs) goes through the same handlers: :meth:`InteractiveDemo.stroke`, :meth:`InteractiveDemo.box`,
  :meth:`InteractiveDemo.click_query`, :meth:`InteractiveDemo.click_support`.
"""
from __future__ import annotations

import hashlib
import io
import time
from typing import Any, Callable, Sequence

import numpy as np
import torch
from PIL import Image, ImageDraw

from hsnetlib import viz
from hsnetlib.data import image_to_tensor, mask_to_tensor
from hsnetlib.model import HSNet, vote
from hsnetlib.predict import check_img_size, episode_logits, upsample
from hsnetlib.utils import pick_device

MAX_SHOTS = 5
TOOLS = ("brush", "eraser", "box", "probe")
DISPLAY = 256  # canvas side in screen pixels (masks are drawn at this resolution, then resized to the input size)
MASK_RGBA = (255, 60, 60, 110)  # the drawn mask on a support canvas


def bf16_supported(device: torch.device) -> bool:
    """Whether ``torch.autocast(bfloat16)`` runs natively on `device` (CUDA: the GPU; CPU: oneDNN's bf16 kernels,
    AVX512-BF16 / AMX)."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def _key(*arrays: np.ndarray | torch.Tensor) -> str:
    digest = hashlib.sha1()
    for a in arrays:
        a = a.detach().cpu().numpy() if isinstance(a, torch.Tensor) else np.ascontiguousarray(a)
        digest.update(str(a.shape).encode())
        digest.update(a.tobytes())
    return digest.hexdigest()


class Session:
    """A query, supports and masks at the model's input size, with cached features (see the module docstring)."""

    def __init__(self, model: HSNet, img_size: int, device: str | torch.device | None = None,
                 bf16: bool | str = "auto"):
        self.img_size = check_img_size(img_size, backbone=model.config.backbone)
        self.device = pick_device(device)
        self.model = model.to(self.device).eval()
        self.bf16 = bf16_supported(self.device) if bf16 == "auto" else bool(bf16)
        self.query: torch.Tensor | None = None  # (3, s, s)
        self.supports: list[torch.Tensor | None] = [None] * MAX_SHOTS
        self.masks: list[torch.Tensor | None] = [None] * MAX_SHOTS  # (s, s) float {0, 1}
        self.backbone_passes = 0  # images sent through the backbone (a cache miss each)
        self._taps: dict[str, list[torch.Tensor]] = {}
        self._query_feats: dict[str, dict[int, torch.Tensor]] = {}
        self._logits: dict[tuple[str, str, str], torch.Tensor] = {}

    # -- inputs ----------------------------------------------------------------------------------------------
    def tensor(self, image: Image.Image | torch.Tensor) -> torch.Tensor:
        """A PIL image (the datasets' transform) or an already normalised (3, s, s) tensor, as a model input."""
        if isinstance(image, torch.Tensor):
            if tuple(image.shape) != (3, self.img_size, self.img_size):
                raise ValueError(f"an input tensor must be (3, {self.img_size}, {self.img_size}), got {tuple(image.shape)}")
            return image.float().cpu()
        return image_to_tensor(image.convert("RGB"), (self.img_size, self.img_size))

    def set_query(self, image: Image.Image | torch.Tensor) -> None:
        self.query = self.tensor(image)

    def set_support(self, k: int, image: Image.Image | torch.Tensor | None) -> None:
        """Support `k` (0-based) takes a new image (None removes it); its mask is cleared."""
        self._check_slot(k)
        self.supports[k] = None if image is None else self.tensor(image)
        self.masks[k] = None

    def set_mask(self, k: int, mask: np.ndarray | torch.Tensor | None) -> None:
        """Support `k`'s mask (H, W) at any resolution (> 0.5 = foreground), resized nearest to the input size."""
        self._check_slot(k)
        if mask is None:
            self.masks[k] = None
            return
        mask = mask.detach().cpu().numpy() if isinstance(mask, torch.Tensor) else np.asarray(mask)
        self.masks[k] = mask_to_tensor(mask > 0.5, (self.img_size, self.img_size))

    def _check_slot(self, k: int) -> None:
        if not 0 <= k < MAX_SHOTS:
            raise ValueError(f"support index {k} must lie in 0..{MAX_SHOTS - 1}")

    def shots(self, upto: int = MAX_SHOTS) -> list[int]:
        """The supports among the first `upto` that take part: an image and a mask with foreground."""
        return [k for k in range(upto)
                if self.supports[k] is not None and self.masks[k] is not None and bool(self.masks[k].any())]

    # -- cached computation ----------------------------------------------------------------------------------
    def autocast(self):
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16)

    def _image_taps(self, image: torch.Tensor) -> tuple[str, list[torch.Tensor]]:
        key = _key(image)
        if key not in self._taps:
            with torch.no_grad(), self.autocast():
                self._taps[key] = self.model.extract_taps(image[None].to(self.device))
            self.backbone_passes += 1
        return key, self._taps[key]

    def _query(self) -> tuple[str, list[torch.Tensor], dict[int, torch.Tensor]]:
        if self.query is None:
            raise ValueError("no query image: set one first")
        key, taps = self._image_taps(self.query)
        if key not in self._query_feats:
            with torch.no_grad(), self.autocast():
                self._query_feats[key] = self.model.correlation.query_features(taps)
        return key, taps, self._query_feats[key]

    def _support_mask(self, k: int) -> torch.Tensor:
        return self.masks[k][None].to(self.device)  # (1, s, s)

    def support_logits(self, k: int) -> torch.Tensor:
        """Support `k`'s 1-shot logits (1, 2, s, s) on the query, float, cached per (query, support, mask)."""
        query_key, query_taps, query_feats = self._query()
        support_key, support_taps = self._image_taps(self.supports[k])
        key = (query_key, support_key, _key(self.masks[k]))
        if key not in self._logits:
            with torch.no_grad(), self.autocast():
                logits = episode_logits(self.model, query_taps, query_feats, support_taps, self._support_mask(k))
            self._logits[key] = upsample(logits, (self.img_size, self.img_size))
        return self._logits[key]

    def predict(self, upto: int = MAX_SHOTS) -> dict[str, Any]:
        """{"shots": the supports used (:meth:`shots`), "1-shot": support 1's mask (s, s) int64 (None without its
        mask), "K-shot": the vote over all of them (None without any)}."""
        shots = self.shots(upto)
        logits = {k: self.support_logits(k) for k in shots}
        one = logits[0].argmax(1)[0] if 0 in logits else None
        many = vote(sum(l.argmax(1).float() for l in logits.values()))[0] if logits else None
        return {"shots": shots, "1-shot": one, "K-shot": many}

    def hypercorrelation(self, k: int) -> list[torch.Tensor]:
        """The hypercorrelation pyramid of the query with support `k` (its current mask), deepest level first, as
        :meth:`HSNet.hypercorrelation` returns it (float)."""
        if self.supports[k] is None:
            raise ValueError(f"support {k + 1} has no image")
        _, query_taps, query_feats = self._query()
        _, support_taps = self._image_taps(self.supports[k])
        mask = self._support_mask(k) if self.masks[k] is not None else torch.ones(
            1, self.img_size, self.img_size, device=self.device)
        with torch.no_grad(), self.autocast():
            support_feats = self.model.correlation.support_features(support_taps, mask)
            pyramid = self.model.correlation(query_feats, support_feats, self.model._sizes(query_taps))
        return [pyramid[p].float() for p in self.levels()]

    def levels(self) -> list[int]:
        """The pyramid levels of :meth:`hypercorrelation`'s list, deepest first."""
        return sorted(self.model.config.pyramid, reverse=True)


# -- widgets ---------------------------------------------------------------------------------------------------
def png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def figure_png(fig) -> bytes:
    """A matplotlib figure as PNG bytes; the figure is closed."""
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=80)
    plt.close(fig)
    return buffer.getvalue()


def disc(shape: tuple[int, int], y: float, x: float, radius: float) -> np.ndarray:
    """A bool (H, W) disc of `radius` pixels around (y, x)."""
    yy, xx = np.ogrid[: shape[0], : shape[1]]
    return (yy - y) ** 2 + (xx - x) ** 2 <= radius ** 2


def segment(shape: tuple[int, int], start: tuple[float, float], end: tuple[float, float], radius: float) -> np.ndarray:
    """The pixels within `radius` of the segment start -> end ((y, x) each): one brush movement."""
    yy, xx = np.mgrid[: shape[0], : shape[1]].astype(np.float64)
    (y0, x0), (y1, x1) = start, end
    dy, dx = y1 - y0, x1 - x0
    t = np.clip(((yy - y0) * dy + (xx - x0) * dx) / max(dy * dy + dx * dx, 1e-9), 0, 1)
    return (yy - (y0 + t * dy)) ** 2 + (xx - (x0 + t * dx)) ** 2 <= radius ** 2


class InteractiveDemo:
    """The notebook's widgets around a :class:`Session` (see the module docstring). ``display(demo.widget)``.

    `episode_loader`, when given, maps an episode index to a data set item (query_img, support_imgs,
    support_masks at the input size), for the "benchmark episode" control."""

    def __init__(self, session: Session, episode_loader: Callable[[int], dict[str, Any]] | None = None,
                 display_size: int = DISPLAY, brush: int = 12):
        import ipywidgets as w
        from ipycanvas import Canvas, MultiCanvas, hold_canvas

        self.session, self.episode_loader, self.size = session, episode_loader, display_size
        self._hold = hold_canvas
        self.masks = [np.zeros((display_size, display_size), bool) for _ in range(MAX_SHOTS)]
        self.redraw_seconds: list[float] = []  # after each mask change: prediction computed and drawn
        self.query_pos, self.support_pos = (0.5, 0.5), (0.5, 0.5)
        self.slice_direction: str | None = None
        self._last: tuple[float, float] | None = None
        self._box_start: tuple[float, float] | None = None
        self._drawing_on: int | None = None
        self.probed_support = 0

        self.tool = w.ToggleButtons(options=TOOLS, value="brush", description="tool",
                                    tooltips=["paint the support mask", "erase it", "drag a box: the mask becomes the box",
                                              "click a support position: its correlation over the query"])
        self.brush = w.IntSlider(value=brush, min=2, max=40, description="brush px")
        self.shots = w.IntSlider(value=1, min=1, max=MAX_SHOTS, description="supports")
        self.shots.observe(lambda _: self._show_supports(), names="value")
        self.target = w.Dropdown(options=["query"] + [f"support {k + 1}" for k in range(MAX_SHOTS)], value="query",
                                 description="load into")
        self.upload = w.FileUpload(accept="image/*", multiple=False, description="upload")
        self.upload.observe(self._on_upload, names="value")
        self.path = w.Text(placeholder="path of an image file", description="path")
        self.path_button = w.Button(description="load path")
        self.path_button.on_click(lambda _: self.load_path(self.path.value))
        self.episode = w.BoundedIntText(value=0, min=0, max=10 ** 6, description="episode")
        self.episode_button = w.Button(description="load episode", disabled=episode_loader is None)
        self.episode_button.on_click(lambda _: self.load_episode(self.episode.value, self.shots.value))
        self.status = w.HTML()

        self.query_canvas = Canvas(width=display_size, height=display_size)
        self.query_canvas.add_class("hsnet-query")
        self.query_canvas.on_mouse_down(lambda x, y: self.click_query(y / self.size, x / self.size))
        self.support_canvases = []
        for k in range(MAX_SHOTS):
            canvas = MultiCanvas(2, width=display_size, height=display_size)
            canvas.add_class(f"hsnet-support-{k}")
            canvas.on_mouse_down(lambda x, y, k=k: self._mouse_down(k, x, y))
            canvas.on_mouse_move(lambda x, y, k=k: self._mouse_move(k, x, y))
            canvas.on_mouse_up(lambda x, y, k=k: self._mouse_up(k, x, y))
            canvas.on_mouse_out(lambda x, y, k=k: self._mouse_up(k, x, y))
            clear = w.Button(description=f"clear mask {k + 1}", layout=w.Layout(width=f"{display_size}px"))
            clear.on_click(lambda _, k=k: self.set_mask(k, None))
            self.support_canvases.append((canvas, w.VBox([w.HTML(f"<b>support {k + 1}</b>"), canvas, clear])))
        self.support_row = w.HBox()
        self.prediction = w.Image(format="png")
        self.prediction.add_class("hsnet-prediction")
        self.slices = w.Image(format="png")
        self.slices.add_class("hsnet-slices")
        self.widget = w.VBox([
            w.HBox([self.target, self.upload, self.path, self.path_button]),
            w.HBox([self.episode, self.episode_button, self.shots]),
            w.HBox([self.tool, self.brush]),
            w.HBox([w.VBox([w.HTML("<b>query</b> (click: its correlation over the support)"), self.query_canvas]),
                    w.VBox([w.HTML("<b>prediction</b>: 1-shot (support 1) | K-shot vote"), self.prediction])]),
            self.support_row, self.status,
            w.HTML("<b>hypercorrelation slices</b> (every pyramid level, evenly spaced layers)"), self.slices])
        self._show_supports()

    # -- loading ---------------------------------------------------------------------------------------------
    def _slot(self) -> int | None:
        return None if self.target.value == "query" else int(self.target.value.split()[1]) - 1

    def _on_upload(self, change) -> None:
        if change["new"]:
            upload = change["new"][0]
            self.load_image(Image.open(io.BytesIO(bytes(upload["content"]))), self._slot(), upload["name"])

    def load_path(self, path: str) -> None:
        from hsnetlib.predict import read_image

        try:
            image = read_image(path)
        except (OSError, ValueError) as err:
            self.status.value = f"<span style='color:#b00'>{err}</span>"
            return
        self.load_image(image, self._slot(), path)

    def load_image(self, image: Image.Image | torch.Tensor, slot: int | None, name: str = "") -> None:
        """The query (slot None) or support `slot` (0-based) takes `image`; a support's mask is cleared."""
        if slot is None:
            self.session.set_query(image)
            self._draw_image(self.query_canvas, self.session.query)
        else:
            self.session.set_support(slot, image)
            self.masks[slot][:] = False
            self._draw_image(self.support_canvases[slot][0][0], self.session.supports[slot])
            self._draw_mask(slot)
            if slot >= self.shots.value:
                self.shots.value = slot + 1
        self.status.value = f"loaded {name or 'image'} as {'the query' if slot is None else f'support {slot + 1}'}"
        self.update()

    def load_episode(self, index: int, shots: int) -> None:
        """A benchmark episode: its query and its first `shots` supports with their masks."""
        item = self.episode_loader(index)
        self.session.set_query(item["query_img"])
        self._draw_image(self.query_canvas, self.session.query)
        shots = min(shots, item["support_imgs"].shape[0], MAX_SHOTS)
        for k in range(shots):
            self.session.set_support(k, item["support_imgs"][k])
            self._draw_image(self.support_canvases[k][0][0], self.session.supports[k])
            self._set_mask_array(k, item["support_masks"][k].numpy())
        for k in range(shots, MAX_SHOTS):
            self.session.set_support(k, None)
            self.masks[k][:] = False
        self.shots.value = shots
        self.status.value = f"episode {index}: {shots} support(s)"
        self.update()

    # -- masks -----------------------------------------------------------------------------------------------
    def _set_mask_array(self, k: int, mask: np.ndarray) -> None:
        resized = Image.fromarray((np.asarray(mask) > 0.5).astype(np.uint8) * 255).resize((self.size, self.size),
                                                                                         Image.Resampling.NEAREST)
        self.masks[k] = np.asarray(resized) > 127
        self._draw_mask(k)
        self.session.set_mask(k, self.masks[k])

    def set_mask(self, k: int, mask: np.ndarray | None) -> None:
        """Support `k`'s mask (any resolution; None clears it), then the prediction is redrawn."""
        self._set_mask_array(k, np.zeros((self.size, self.size), bool) if mask is None else mask)
        self.update()

    def stroke(self, k: int, points: Sequence[tuple[float, float]], erase: bool = False,
               radius: float | None = None) -> None:
        """A brush (or eraser) stroke on support `k` through `points` ((y, x) fractions), then the redraw."""
        radius = self.brush.value if radius is None else radius
        pixels = [(y * self.size, x * self.size) for y, x in points]
        for start, end in zip(pixels, pixels[1:] or pixels):
            self._paint(k, start, end, erase, radius)
        self._commit(k)

    def box(self, k: int, corner: tuple[float, float], other: tuple[float, float]) -> None:
        """Support `k`'s mask becomes the box between two corners ((y, x) fractions), then the redraw."""
        (y0, y1), (x0, x1) = sorted((corner[0], other[0])), sorted((corner[1], other[1]))
        mask = np.zeros((self.size, self.size), bool)
        mask[int(y0 * self.size): int(np.ceil(y1 * self.size)), int(x0 * self.size): int(np.ceil(x1 * self.size))] = True
        self.masks[k] = mask
        self._commit(k)

    def _paint(self, k: int, start: tuple[float, float], end: tuple[float, float], erase: bool, radius: float) -> None:
        covered = segment(self.masks[k].shape, start, end, radius)
        self.masks[k] = self.masks[k] & ~covered if erase else self.masks[k] | covered

    def _commit(self, k: int) -> None:
        self._draw_mask(k)
        self.session.set_mask(k, self.masks[k])
        self.update()

    # mouse handlers: canvas pixel coordinates (x, y)
    def _mouse_down(self, k: int, x: float, y: float) -> None:
        if self.tool.value == "probe":
            self.click_support(k, y / self.size, x / self.size)
            return
        self._drawing_on, self._last, self._box_start = k, (y, x), (y, x)
        if self.tool.value in ("brush", "eraser"):
            self._paint(k, (y, x), (y, x), self.tool.value == "eraser", self.brush.value)
            self._draw_dab(k, (y, x), (y, x))

    def _mouse_move(self, k: int, x: float, y: float) -> None:
        if self._drawing_on != k or self.tool.value not in ("brush", "eraser"):
            return
        self._paint(k, self._last, (y, x), self.tool.value == "eraser", self.brush.value)
        self._draw_dab(k, self._last, (y, x))
        self._last = (y, x)

    def _mouse_up(self, k: int, x: float, y: float) -> None:
        if self._drawing_on != k:
            return
        self._drawing_on = None
        if self.tool.value == "box":
            self.box(k, (self._box_start[0] / self.size, self._box_start[1] / self.size), (y / self.size, x / self.size))
            return
        self._paint(k, self._last, (y, x), self.tool.value == "eraser", self.brush.value)
        self._commit(k)

    # -- probing ---------------------------------------------------------------------------------------------
    def click_query(self, y: float, x: float) -> None:
        """Show the query -> support slices at the query position (y, x) (fractions)."""
        self.query_pos, self.slice_direction = (y, x), viz.DIRECTIONS[0]
        self._draw_slices()

    def click_support(self, k: int, y: float, x: float) -> None:
        """Show the support -> query slices of support `k` at its position (y, x) (fractions)."""
        self.support_pos, self.slice_direction, self.probed_support = (y, x), viz.DIRECTIONS[1], k
        self._draw_slices()

    def _draw_slices(self) -> None:
        if self.session.query is None:
            return
        k = self.probed_support if self.slice_direction == viz.DIRECTIONS[1] else 0
        if self.session.supports[k] is None:
            self.status.value = f"support {k + 1} has no image: nothing to correlate with"
            return
        pos = self.query_pos if self.slice_direction == viz.DIRECTIONS[0] else self.support_pos
        fig = viz.correlation_slice(self.session.hypercorrelation(k), self.session.levels(), self.session.query,
                                    self.session.supports[k], pos, self.slice_direction)
        fig.suptitle(f"{self.slice_direction} (support {k + 1}), position y={pos[0]:.2f} x={pos[1]:.2f}", fontsize=9)
        self.slices.value = figure_png(fig)

    # -- drawing ---------------------------------------------------------------------------------------------
    def _show_supports(self) -> None:
        self.support_row.children = [box for _, box in self.support_canvases[: self.shots.value]]

    def _draw_image(self, canvas, tensor: torch.Tensor) -> None:
        rgb = np.asarray(viz.to_pil(viz.denormalize(tensor)).resize((self.size, self.size), Image.Resampling.BILINEAR))
        canvas.put_image_data(rgb, 0, 0)

    def _draw_dab(self, k: int, start: tuple[float, float], end: tuple[float, float]) -> None:
        """What a mouse movement painted (or erased), drawn on the mask layer at once; :meth:`_draw_mask` redraws
        the whole layer from the mask when the stroke ends."""
        layer = self.support_canvases[k][0][1]
        with self._hold():
            layer.global_composite_operation = "destination-out" if self.tool.value == "eraser" else "source-over"
            layer.stroke_style = "rgba({}, {}, {}, {})".format(*MASK_RGBA[:3], MASK_RGBA[3] / 255)
            layer.line_width, layer.line_cap = 2 * self.brush.value, "round"
            layer.stroke_line(start[1], start[0], end[1], end[0])
            layer.global_composite_operation = "source-over"

    def _draw_mask(self, k: int) -> None:
        rgba = np.zeros((self.size, self.size, 4), np.uint8)
        rgba[self.masks[k]] = MASK_RGBA
        layer = self.support_canvases[k][0][1]
        with self._hold():
            layer.clear()
            layer.put_image_data(rgba, 0, 0)

    def update(self) -> None:
        """Recompute the prediction (cached features) and redraw it; the time it took is kept."""
        if self.session.query is None:
            return
        start = time.perf_counter()
        result = self.session.predict(self.shots.value)  # the supports shown
        shots = result["shots"]
        if not shots:
            self.status.value = "draw a support mask (or give a box) to see the prediction"
            return
        tiles = []
        for label in ("1-shot", "K-shot"):
            mask = result[label]
            tile = viz.to_pil(viz.overlay(self.session.query, mask, alpha=0.5)).resize(
                (self.size, self.size), Image.Resampling.NEAREST)
            tiles.append((f"{label} ({len(shots)} supports)" if label == "K-shot" else
                          ("1-shot" if mask is not None else "1-shot: support 1 has no mask"), tile))
        panel = Image.new("RGB", (2 * self.size + 8, self.size + 18), "white")
        draw = ImageDraw.Draw(panel)
        for i, (title, tile) in enumerate(tiles):
            panel.paste(tile, (i * (self.size + 8), 18))
            draw.text((i * (self.size + 8) + 2, 3), title, fill="black")
        self.prediction.value = png_bytes(panel)
        self.last_prediction = result
        self.redraw_seconds.append(time.perf_counter() - start)
        self.status.value = (f"prediction redrawn in {self.redraw_seconds[-1]:.2f} s"
                             f"{' (bf16)' if self.session.bf16 else ''}; backbone passes so far: "
                             f"{self.session.backbone_passes}")
