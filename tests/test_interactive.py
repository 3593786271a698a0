"""hsnetlib.interactive without a browser: the session's predictions against ``predict_mask`` and
``hypercorrelation``, its caches (no backbone pass after a stroke), bf16 against fp32, and the widgets driven
through their scripted handlers (the browser test drives them with the mouse).
Random-weight ResNet50 at 64 px."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import random_resnet50
from hsnetlib import interactive
from hsnetlib.data import read_grey_mask, read_rgb
from hsnetlib.model import HSNet

SIZE = 64


@pytest.fixture(scope="module")
def model() -> HSNet:
    return random_resnet50()


@pytest.fixture(scope="module")
def pairs(fss_root) -> list[tuple[Image.Image, np.ndarray]]:
    """(image, mask) pairs of one class of the conftest FSS layout (non-square images of textured objects)."""
    folder = fss_root / "FSS-1000" / "egg"
    return [(read_rgb(folder / f"{n}.jpg"), read_grey_mask(folder / f"{n}.png")) for n in range(1, 7)]


def session_with(model, pairs, shots: int, bf16: bool = False) -> interactive.Session:
    """The query is pair 0; supports 1..shots with their masks."""
    session = interactive.Session(model, SIZE, device="cpu", bf16=bf16)
    session.set_query(pairs[0][0])
    for k, (image, mask) in enumerate(pairs[1: shots + 1]):
        session.set_support(k, image)
        session.set_mask(k, mask)
    return session


def test_predictions_equal_predict_mask_and_a_stroke_needs_no_backbone_pass(model, pairs):
    session = session_with(model, pairs, 3)
    result = session.predict()
    supports = torch.stack(session.supports[:3])[None]
    masks = torch.stack(session.masks[:3])[None]
    query = session.query[None]
    assert result["shots"] == [0, 1, 2]
    assert torch.equal(result["K-shot"], model.predict_mask(query, supports, masks)[0])  # K-shot is the vote
    assert torch.equal(result["1-shot"], model.predict_mask(query, supports[:, :1], masks[:, :1])[0])
    assert 0 < result["K-shot"].float().mean() < 1
    assert session.backbone_passes == 4  # the query and three supports, once each
    session.set_mask(1, np.ones((10, 10)))  # the whole image
    again = session.predict()
    assert session.backbone_passes == 4, "a new mask must not send an unchanged image through the backbone"
    masks[0, 1] = session.masks[1]
    assert torch.equal(again["K-shot"], model.predict_mask(query, supports, masks)[0])
    assert torch.equal(again["1-shot"], result["1-shot"])  # support 1 did not change
    session.set_support(0, pairs[5][0])  # a new image, with no mask yet: left out
    assert session.predict()["shots"] == [1, 2] and session.backbone_passes == 4
    session.set_mask(0, pairs[5][1])
    assert session.predict()["shots"] == [0, 1, 2] and session.backbone_passes == 5  # its one backbone pass


def test_hypercorrelation_equals_the_models(model, pairs):
    session = session_with(model, pairs, 2)
    ours = session.hypercorrelation(1)
    theirs = model.hypercorrelation(session.query[None], session.supports[1][None], session.masks[1][None])
    assert len(ours) == len(theirs) == len(session.levels())
    for a, b in zip(ours, theirs):
        torch.testing.assert_close(a, b)


def test_bf16_masks_agree_with_fp32(model, pairs):
    full, low = session_with(model, pairs, 2), session_with(model, pairs, 2, bf16=True)
    assert low.bf16 and not full.bf16
    a, b = full.predict(), low.predict()
    for label in ("1-shot", "K-shot"):
        agreement = (a[label] == b[label]).float().mean().item()
        assert agreement >= 0.98, f"{label}: bf16 masks equal fp32 on {agreement:.3f} of the pixels"
    assert low.support_logits(0).dtype == torch.float32  # upsampled in float for the argmax and the vote


def test_session_errors(model):
    session = interactive.Session(model, SIZE, device="cpu", bf16=False)
    with pytest.raises(ValueError, match="support 1 has no image"):
        session.hypercorrelation(0)
    session.set_support(0, Image.new("RGB", (40, 40)))
    with pytest.raises(ValueError, match="no query image"):
        session.hypercorrelation(0)
    with pytest.raises(ValueError, match="support index 5"):
        session.set_support(5, None)
    with pytest.raises(ValueError, match="img_size must be an integer >= 32"):
        interactive.Session(model, 8)


def test_widgets_scripted_like_the_mouse(model, pairs):
    pytest.importorskip("ipycanvas")
    session = interactive.Session(model, SIZE, device="cpu", bf16=False)
    demo = interactive.InteractiveDemo(session, display_size=128)
    demo.load_image(pairs[0][0], None)
    demo.load_image(pairs[1][0], 0)
    demo.load_image(pairs[2][0], 1)
    assert demo.shots.value == 2 and bytes(demo.prediction.value) == b""  # no mask drawn yet: no prediction
    demo.box(0, (0.1, 0.15), (0.6, 0.7))
    first = bytes(demo.prediction.value)
    assert first and demo.last_prediction["shots"] == [0]
    demo.stroke(1, [(0.2, 0.2), (0.5, 0.6), (0.8, 0.7)], radius=10)
    second = bytes(demo.prediction.value)
    assert second != first and demo.last_prediction["shots"] == [0, 1]
    passes = session.backbone_passes
    assert passes == 3  # query and two supports
    stroked = demo.masks[1].copy()
    demo.stroke(1, [(0.5, 0.6)], erase=True, radius=10)
    assert demo.masks[1].sum() < stroked.sum() and not demo.masks[1][64, 77]
    assert session.backbone_passes == passes, "a stroke must not send an unchanged image through the backbone"
    # the mouse path: down, moves, up on support 2 with the brush
    demo._mouse_down(1, 10, 100)
    demo._mouse_move(1, 60, 100)
    demo._mouse_up(1, 110, 100)
    assert demo.masks[1][100, 10:110].all()
    demo.click_query(0.3, 0.4)
    query_slices = bytes(demo.slices.value)
    assert query_slices.startswith(b"\x89PNG")
    demo.tool.value = "probe"
    demo._mouse_down(1, 64, 32)
    assert demo.slice_direction == "support -> query" and demo.probed_support == 1
    assert bytes(demo.slices.value) != query_slices
    assert len(demo.redraw_seconds) >= 4
