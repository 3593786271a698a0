"""The backbone registry, parametrized over ``list_backbones()``: a registration is tested without writing a test.

Every registered backbone is built in full with random frozen weights (no download) and run on small images
(twice its coarsest stride: 64 px for strides 8/16/32, 28 px for a ViT/14): taps per level with the declared
channels and strides, HSNet's training step and 1- and 5-shot prediction; for timm's models, the taps equal
timm's own intermediate outputs. Then the registry's errors, the ViT size refusal, weights files and tags, and
what a checkpoint records of its backbone.
"""
from __future__ import annotations

import copy
import math
import re
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import timm

from hsnetlib.backbones import BackboneSpec, get_backbone, list_backbones, register_backbone, unregister_backbone
from hsnetlib.model import HSNet, squeeze_strides

BACKBONES = list_backbones()
TIMM_BACKBONES = [name for name in BACKBONES if get_backbone(name).source == "timm"]


def small_size(spec: BackboneSpec) -> int:
    """The smallest image at which every level's feature map is 2x2 (an input multiple for a ViT)."""
    return 2 * math.lcm(max(spec.level_strides), spec.input_multiple)


def episode(size: int, shots: int, batch: int = 2, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    query = torch.randn(batch, 3, size, size, generator=g)
    supports = torch.randn(batch, shots, 3, size, size, generator=g)
    masks = torch.zeros(batch, shots, size, size)
    masks[..., size // 4:, size // 4:] = 1
    return query, supports, masks


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One torch thread: these small ops take milliseconds each in OpenMP waits when other jobs share the cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module", params=BACKBONES)
def model(request) -> HSNet:
    torch.manual_seed(0)
    return HSNet.from_config({"backbone": request.param, "weights": None}).eval()


def test_registry_lists_the_paper_backbones_first_and_the_timm_ones():
    assert BACKBONES[:3] == ["vgg16", "resnet50", "resnet101"]
    assert {"swin_base_patch4_window12_384", "convnext_base", "vit_small_patch14_dinov2", "vit_base_patch14_dinov2",
            "vit_large_patch14_dinov2"} <= set(TIMM_BACKBONES)


def test_unknown_backbone_error_lists_the_registered_names():
    with pytest.raises(ValueError, match="unknown backbone 'resnet18'") as err:
        get_backbone("resnet18")
    assert all(name in str(err.value) for name in BACKBONES)


def test_a_name_is_registered_once():
    with pytest.raises(ValueError, match="already registered"):
        register_backbone(get_backbone("resnet50"))


# -- every registered backbone ------------------------------------------------------------------------------------
def test_taps_per_level_have_the_declared_channels_and_strides(model):
    spec = get_backbone(model.config.backbone)
    size = small_size(spec)
    with torch.no_grad():
        taps = model.extract_taps(torch.randn(1, 3, size, size))
    assert len(taps) == sum(spec.level_taps)
    levels = [p for p, n in enumerate(spec.level_taps) for _ in range(n)]
    assert [tuple(t.shape) for t in taps] == [(1, spec.level_dims[p], size // spec.level_strides[p],
                                               size // spec.level_strides[p]) for p in levels]
    assert all(torch.isfinite(t).all() for t in taps)
    assert not any(p.requires_grad for p in model.backbone.parameters())
    assert not any(hasattr(model.backbone, head) for head in spec.heads)


def test_every_level_squeezes_to_the_same_support_grid(model):
    """At 9x the coarsest stride (288 px for strides 8/16/32, 126 px for a ViT/14) the coarsest maps are 9x9 and
    every level's squeezing block reaches a 2x2 support grid (as at 400 px with ResNet). Shapes only: the
    backbone and the squeezing blocks run on the meta device."""
    spec = get_backbone(model.config.backbone)
    size = 9 * math.lcm(max(spec.level_strides), spec.input_multiple)
    with torch.device("meta"):
        taps = spec.extract_taps(spec.build(None), torch.empty(1, 3, size, size))
    learner = copy.deepcopy(model.hpn_learner).to("meta")
    grids = {}
    for p, ids in model.correlation.level_taps.items():
        h, w = taps[ids[0]].shape[-2:]
        grids[p] = tuple(learner.squeeze(p, torch.empty(1, len(ids), h, w, h, w, device="meta")).shape[-2:])
    assert set(grids.values()) == {(2, 2)}, grids


def test_hsnet_trains_a_step_and_predicts_at_one_and_five_shots(model):
    spec = get_backbone(model.config.backbone)
    size = small_size(spec)
    query, supports, masks = episode(size, shots=5, batch=1)
    target = (torch.arange(size).view(1, size, 1) >= size // 2).long().expand(1, size, size)
    before = [p.detach().clone() for p in model.learner_parameters()]
    optimizer = torch.optim.Adam(model.learner_parameters(), lr=1e-3)
    model.train()
    loss = F.cross_entropy(model(query, supports[:, 0], masks[:, 0]), target)
    loss.backward()
    optimizer.step()
    model.eval()
    assert torch.isfinite(loss)
    assert all(p.grad is None for p in model.backbone_parameters())
    assert any(not torch.equal(b, p) for b, p in zip(before, model.learner_parameters()))
    for shots in (1, 5):
        pred = model.predict_mask(query, supports[:, :shots], masks[:, :shots])
        assert pred.shape == (1, size, size) and pred.dtype == torch.int64
        assert set(pred.unique().tolist()) <= {0, 1}


@pytest.mark.parametrize("name", TIMM_BACKBONES)
def test_timm_taps_equal_timms_own_intermediate_outputs(name):
    """ViTs: ``forward_intermediates`` gives every block, hence every tap. Hierarchical models: it gives the
    stage outputs, i.e. the last tap of each level; every other tap is checked against the output of its block,
    recorded by forward hooks during timm's own forward pass."""
    spec = get_backbone(name)
    torch.manual_seed(0)
    net = spec.build(None)
    size = small_size(spec)
    img = torch.randn(2, 3, size, size)
    blocks = [m for n, m in net.named_modules() if n.split(".")[-2:-1] == ["blocks"]]
    recorded: list[torch.Tensor] = []
    hooks = [b.register_forward_hook(lambda _m, _i, out: recorded.append(out)) for b in blocks]
    with torch.no_grad():
        ours = spec.extract_taps(net, img)
        recorded.clear()
        theirs = net.forward_intermediates(img, intermediates_only=True, output_fmt="NCHW")
    for h in hooks:
        h.remove()
    if len(theirs) >= len(ours):  # one intermediate per block
        pairs = list(zip(ours, theirs[-len(ours):]))
    else:  # one per stage: the last block of each level's stage
        ends = [sum(spec.level_taps[:p + 1]) - 1 for p in range(3)]
        pairs = [(ours[i], t) for i, t in zip(ends, theirs[-3:])]
        hooked = recorded[-len(ours):]
        channels_last = hooked[0].shape[-1] == ours[0].shape[1] and hooked[0].shape[1] != ours[0].shape[1]
        pairs += [(o, h.permute(0, 3, 1, 2) if channels_last else h) for o, h in zip(ours, hooked)]
    assert len(pairs) >= 3
    for o, t in pairs:
        assert o.shape == t.shape
        torch.testing.assert_close(o, t, rtol=0, atol=1e-6)


# -- squeeze schedule, sizes, weights, checkpoints -----------------------------------------------------------------
def test_squeeze_strides_are_the_papers_for_strides_8_16_32_and_uniform_for_one_stride():
    assert squeeze_strides((8, 16, 32)) == {1: (4, 4, 2), 2: (4, 2, 2), 3: (2, 2, 2)}
    assert squeeze_strides((14, 14, 14)) == {1: (2, 2, 2), 2: (2, 2, 2), 3: (2, 2, 2)}
    with pytest.raises(ValueError, match="power of two"):
        squeeze_strides((8, 12, 32))


@pytest.fixture(scope="module")
def vit() -> HSNet:
    torch.manual_seed(0)
    return HSNet.from_config({"backbone": "vit_small_patch14_dinov2", "weights": None}).eval()


def test_vit_refuses_an_image_size_that_is_no_multiple_of_14_naming_the_nearest(vit):
    query, supports, masks = episode(400, shots=1, batch=1)
    with pytest.raises(ValueError, match=r"multiples of 14.*400x400.*392 and 406"):
        vit.predict_mask(query, supports, masks)
    assert vit.predict_mask(*episode(42, shots=1, batch=1)).shape == (1, 42, 42)


def test_timm_weights_file_loads_and_a_checkpoint_records_name_weights_and_hash(vit, tmp_path):
    spec = get_backbone("vit_small_patch14_dinov2")
    path = tmp_path / "vits14.pth"
    torch.save(vit.backbone.state_dict(), path)
    net = spec.build(str(path))
    img = torch.randn(1, 3, 28, 28)
    with torch.no_grad():
        assert all(torch.equal(a, b) for a, b in zip(spec.extract_taps(net, img), vit.extract_taps(img)))
    model = HSNet.from_config({"backbone": spec.name, "weights": str(path)})
    saved = torch.load(model.save(tmp_path / "model.pt"), weights_only=True)
    record = saved["backbone"]
    assert record["name"] == spec.name and record["weights"] == str(path) and len(record["sha256"]) == 64
    assert HSNet.load(tmp_path / "model.pt", backbone=spec.name).config.backbone == spec.name
    with pytest.raises(ValueError, match="vit_small_patch14_dinov2 backbone, not resnet50"):
        HSNet.load(tmp_path / "model.pt", backbone="resnet50")


def test_weights_of_another_model_are_refused_naming_the_file(vit, tmp_path):
    path = tmp_path / "resnet.pth"
    torch.save({"conv1.weight": torch.zeros(64, 3, 7, 7)}, path)
    with pytest.raises(ValueError, match=f"{path}.*do not fit vit_small_patch14_dinov2"):
        get_backbone("vit_small_patch14_dinov2").build(str(path))


def test_unknown_weights_name_lists_the_tags_and_offline_error_names_the_file(monkeypatch):
    spec = get_backbone("vit_small_patch14_dinov2")
    with pytest.raises(FileNotFoundError, match="lvd142m"):
        spec.build("imagenet")

    def offline(*args, **kwargs):
        raise OSError("no network")

    monkeypatch.setattr(timm.models, "load_pretrained", offline)
    with pytest.raises(RuntimeError, match=r"Download https://huggingface.co/timm/vit_small_patch14_dinov2\.lvd142m/"
                                           r"resolve/main/model\.safetensors.*weights='/path/to/model\.safetensors'"):
        spec.build("lvd142m")


def test_image_size_whose_levels_squeeze_to_different_grids_is_refused_naming_valid_sizes():
    """A backbone whose feature sizes round down (floor(s / stride), as unpadded strided convs give) squeezes
    264 px to support grids 2x2 / 1x1 / 1x1; the error names the nearest sizes that squeeze to one grid (263 and
    288, derived from the spec and the learner's strides), and those run."""
    convs = torch.nn.ModuleList(torch.nn.Conv2d(3, 4, s, stride=s) for s in (8, 16, 32))  # floor(s / stride)
    spec = BackboneSpec(name="floor_test", source="test", build=lambda weights: convs.requires_grad_(False),
                        taps=lambda net, img: [conv(img) for conv in net], level_taps=(1, 1, 1),
                        level_strides=(8, 16, 32), level_dims=(4, 4, 4), heads=(), pretrained=())
    register_backbone(spec)
    try:  # registered for this test only
        model = HSNet.from_config({"backbone": "floor_test", "weights": None}).eval()
        with pytest.raises(ValueError, match=r"at 264 px .*floor_test.*different support grids.*263 and 288"):
            model.predict_mask(*episode(264, shots=1, batch=1))
        assert model.valid_img_sizes(264) == (263, 288)
        assert model.predict_mask(*episode(263, shots=1, batch=1)).shape == (1, 263, 263)
    finally:
        unregister_backbone(spec.name)


def test_readme_lists_each_backbones_learner_parameter_count(model):
    """README "Backbones" has one table row per registered backbone with its learner's parameter count."""
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    row = re.search(rf"^\| `{model.config.backbone}` \|.*\| ([\d,]+) \|$", readme, flags=re.M)
    assert row, f"README.md's Backbones table has no row for {model.config.backbone}"
    assert row.group(1) == f"{model.num_learnable_parameters():,}"
