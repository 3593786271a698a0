"""End-to-end equivalence with the authors' HSNet (juhongm999/hsnet, model/hsnet.py) on golden outputs.

``tests/golden/`` holds, for ResNet50, VGG16 and ResNet101 at 400 px, the authors' 1-shot logits and
3-shot votes for weights and an episode regenerated here from numpy's legacy generator (the recipe is
in ``tests/golden/README.md``, a verbatim copy of ../shared/reference/golden/README.md; the .npz files and
manifest.json are copies too). The weights are written as a released ``best_model.pt`` (``module.``
prefix, complete torchvision backbone with its classifier head) and loaded with
:meth:`HSNet.from_official_checkpoint`; that model is saved and reloaded in hsnetlib's own format. The
logits must match within 1e-4 relative (max |diff| / max |logit|) and the votes on every decided pixel.
400 px is the size at which every pyramid level squeezes to a 2x2 support grid, so the mixing and the
support-dims average are exercised, and the decoder's upsampling and the final resize run at their
published sizes. Cost: 6 backbone passes at 400 px per backbone (about 80 s of CPU for the three).
"""
from __future__ import annotations

import json
import math
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision

from hsnetlib.backbones import get_backbone
from hsnetlib.model import HSNet, HSNetConfig

GOLDEN = Path(__file__).resolve().parent / "golden"
MANIFEST = json.loads((GOLDEN / "manifest.json").read_text())
REFERENCE = Path(__file__).resolve().parent / "reference" / "official-state-dict.tsv"
BACKBONES = ("resnet50", "vgg16", "resnet101")
SIZE = 400
SHOTS = 3
RELATIVE_TOLERANCE = 1e-4  # max |ours - theirs| / max |theirs|


# -- the recipe (tests/golden/README.md) -----------------------------------------------------------------
def recipe_value(key: str, shape: tuple[int, ...]) -> np.ndarray:
    """The float64 value of state-dict entry ``key`` (name without ``module.``), from its own legacy stream."""
    rng = np.random.RandomState(zlib.crc32(key.encode()))
    if key.endswith("running_var"):
        return rng.uniform(0.5, 1.5, shape)
    if key.endswith("running_mean"):
        return rng.normal(0.0, 0.1, shape)
    if key.endswith("bias"):
        return rng.normal(0.0, 0.05, shape)
    if len(shape) == 1:  # batch-norm and group-norm scales
        return rng.uniform(0.5, 1.5, shape)
    return rng.normal(0.0, 1.0, shape) * math.sqrt(2 / math.prod(shape[1:]))


def released_layout(backbone: str) -> dict[str, torch.Size]:
    """Names and shapes of a released checkpoint (without ``module.``): the complete torchvision model
    under ``backbone.`` (classifier head included) and the learner under ``hpn_learner.``."""
    with torch.device("meta"):
        full = getattr(torchvision.models, backbone)()
        learner = HSNet(HSNetConfig(backbone=backbone, weights=None)).hpn_learner
    return {**{f"backbone.{k}": v.shape for k, v in full.state_dict().items()},
            **{f"hpn_learner.{k}": v.shape for k, v in learner.state_dict().items()}}


def is_head(backbone: str, key: str) -> bool:
    return key.startswith(tuple(f"backbone.{head}." for head in get_backbone(backbone).heads))


def recipe_state_dict(backbone: str) -> dict[str, torch.Tensor]:
    """The golden weights in the released layout. ``num_batches_tracked`` keeps torchvision's 0. The
    classifier head takes no part in the output; it is stored with torchvision's shapes as a zero-stride
    tensor (VGG16's would be 124M values drawn and written for nothing)."""
    state = {}
    for key, shape in released_layout(backbone).items():
        if key.endswith("num_batches_tracked"):
            state[key] = torch.tensor(0)
        elif is_head(backbone, key):
            state[key] = torch.zeros(()).expand(shape)
        else:
            state[key] = torch.from_numpy(recipe_value(key, tuple(shape)).astype(np.float32))
    return state


def recipe_episode(size: int = SIZE, shots: int = SHOTS, seed: int = 1):
    """Query (1, 3, S, S), supports (1, K, 3, S, S), box masks (1, K, S, S) from RandomState(seed)."""
    rng = np.random.RandomState(seed)
    query = rng.normal(0, 1, (1, 3, size, size)).astype(np.float32)
    supports = rng.normal(0, 1, (1, shots, 3, size, size)).astype(np.float32)
    masks = np.zeros((1, shots, size, size), np.float32)
    for k in range(shots):
        y0, x0 = rng.randint(0, size // 2, 2)
        h, w = rng.randint(size // 6, size // 2, 2)
        masks[0, k, y0:y0 + h, x0:x0 + w] = 1
    return torch.from_numpy(query), torch.from_numpy(supports), torch.from_numpy(masks)


# -- fixtures: one released checkpoint and one model build per backbone ------------------------------------
@pytest.fixture(scope="module")
def episode():
    return recipe_episode()


@pytest.fixture(scope="module", params=BACKBONES)
def golden(request):
    backbone = request.param
    with np.load(GOLDEN / f"{backbone}_{SIZE}px.npz") as npz:
        return backbone, {k: torch.from_numpy(v) for k, v in npz.items()}


@pytest.fixture(scope="module")
def released(golden, tmp_path_factory) -> Path:
    """The golden weights written as the authors' ``best_model.pt`` (saved from nn.DataParallel)."""
    backbone, _ = golden
    path = tmp_path_factory.mktemp(f"released_{backbone}") / "best_model.pt"
    torch.save({f"module.{k}": v for k, v in recipe_state_dict(backbone).items()}, path)
    return path


@pytest.fixture(scope="module")
def models(released) -> tuple[HSNet, HSNet]:
    """The released checkpoint through :meth:`HSNet.from_official_checkpoint`, and that model after
    hsnetlib's own :meth:`HSNet.save` / :meth:`HSNet.load`."""
    official = HSNet.from_official_checkpoint(released).eval()
    reloaded = HSNet.load(official.save(released.parent / "hsnetlib.pt")).eval()
    return official, reloaded


# -- the recipe reproduces the golden inputs ---------------------------------------------------------------
def test_released_checkpoint_reproduces_the_manifest(golden, released):
    backbone, _ = golden
    entry = MANIFEST[f"{backbone}_{SIZE}px"]
    assert (entry["backbone"], entry["img_size"], entry["shots"], entry["episode_seed"]) == (backbone, SIZE, SHOTS, 1)
    state = torch.load(released, weights_only=True)
    for key, expected in entry["weight_sums"].items():
        assert state[f"module.{key}"].double().sum().item() == pytest.approx(expected, rel=1e-12), key


def test_learner_layout_is_the_released_one():
    rows = [line.split("\t")[0] for line in REFERENCE.read_text().splitlines() if line and not line.startswith("#")]
    learner = [k for k in released_layout("resnet50") if k.startswith("hpn_learner.")]
    assert learner == rows


def test_released_checkpoint_holds_the_classifier_head_with_torchvision_shapes(golden, released):
    backbone, _ = golden
    state = torch.load(released, weights_only=True)
    heads = {k.removeprefix("module."): tuple(v.shape) for k, v in state.items()
             if is_head(backbone, k.removeprefix("module."))}
    expected = {"vgg16": {"backbone.classifier.0.weight": (4096, 25088), "backbone.classifier.6.bias": (1000,)},
                "resnet50": {"backbone.fc.weight": (1000, 2048), "backbone.fc.bias": (1000,)},
                "resnet101": {"backbone.fc.weight": (1000, 2048), "backbone.fc.bias": (1000,)}}[backbone]
    assert expected.items() <= heads.items()
    assert all(k.startswith("module.") for k in state)


# -- the authors' numbers ------------------------------------------------------------------------------------
# Each route runs one of the two checks (a 400 px forward is seconds of CPU per backbone pass); the last test
# makes the routes interchangeable: same config, bit-identical weights, both in eval mode.
def test_one_shot_logits_through_the_released_checkpoint_equal_the_authors(golden, models, episode):
    backbone, reference = golden
    official, _ = models
    query, supports, masks = episode
    with torch.no_grad():
        logits = official(query, supports[:, 0], masks[:, 0])
    theirs = reference["logits_1shot"]
    assert logits.shape == theirs.shape == (1, 2, SIZE, SIZE)
    scale = theirs.abs().max().item()
    assert scale == pytest.approx(MANIFEST[f"{backbone}_{SIZE}px"]["logit_abs_max"], rel=1e-6)
    error = (logits - theirs).abs().max().item() / scale
    assert error <= RELATIVE_TOLERANCE, f"{backbone}: max |diff| / max |logit| = {error:.2e}"


def test_three_shot_votes_after_hsnetlib_save_and_load_equal_the_authors(golden, models, episode):
    backbone, reference = golden
    _, reloaded = models
    mask = reloaded.predict_mask(*episode)
    theirs, decided = reference["mask_3shot"].long(), reference["decided_3shot"].bool()
    assert mask.shape == theirs.shape == (1, SIZE, SIZE) and mask.dtype == torch.int64
    assert decided.float().mean().item() == pytest.approx(MANIFEST[f"{backbone}_{SIZE}px"]["decided_fraction_3shot"])
    wrong = (mask != theirs) & decided
    assert not wrong.any(), f"{backbone}: {int(wrong.sum())} of the decided pixels voted differently"


def test_both_routes_hold_the_same_model(golden, models):
    backbone, _ = golden
    official, reloaded = models
    assert official.config == reloaded.config and official.config.backbone == backbone
    assert not official.training and not reloaded.training and not reloaded.backbone.training
    ours, theirs = official.state_dict(), reloaded.state_dict()
    assert list(ours) == list(theirs)
    assert all(torch.equal(ours[k], theirs[k]) for k in ours)
