"""Checkpoints: the authors' released layout (``module.`` prefix, full torchvision backbone, learner names and
shapes of ``tests/reference/official-state-dict.tsv``, a verbatim copy of ../shared/reference/official-state-dict.tsv),
hsnetlib's own format, local backbone weights, and the errors for files that do not fit.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest
import torch
import torchvision

from hsnetlib.backbones import get_backbone
from hsnetlib.model import HPNLearner, HSNet, HSNetConfig

REFERENCE = Path(__file__).resolve().parent / "reference" / "official-state-dict.tsv"


def reference_learner_shapes() -> dict[str, tuple[int, ...]]:
    """Learner keys and shapes of a released ResNet50 checkpoint, in file order."""
    rows = [line.split("\t") for line in REFERENCE.read_text().splitlines() if line and not line.startswith("#")]
    return {key: tuple(ast.literal_eval(shape)) for key, shape in rows}


def released_state_dict(model: HSNet) -> dict[str, torch.Tensor]:
    """What the authors' ``best_model.pt`` holds for ``model``: DataParallel names and the classifier head
    of their full torchvision backbone."""
    state = {f"module.{k}": v.clone() for k, v in model.state_dict().items()}
    features = model.backbone.layer4[-1].conv3.out_channels
    state["module.backbone.fc.weight"] = torch.randn(1000, features)
    state["module.backbone.fc.bias"] = torch.randn(1000)
    return state


def episode(size: int = 64, shots: int = 2):
    g = torch.Generator().manual_seed(5)
    masks = torch.zeros(1, shots, size, size)
    masks[..., size // 4:, size // 3:] = 1
    return torch.randn(1, 3, size, size, generator=g), torch.randn(1, shots, 3, size, size, generator=g), masks


@pytest.fixture(scope="module")
def resnet50_model() -> HSNet:
    """Random weights, with non-trivial group-norm affine parameters."""
    torch.manual_seed(0)
    model = HSNet(HSNetConfig(backbone="resnet50", weights=None)).eval()
    with torch.no_grad():
        for module in model.hpn_learner.modules():
            if isinstance(module, torch.nn.GroupNorm):
                module.weight.uniform_(0.5, 1.5)
                module.bias.normal_(0, 0.1)
    return model


@pytest.fixture(scope="module")
def released(resnet50_model, tmp_path_factory) -> tuple[Path, dict[str, torch.Tensor]]:
    state = released_state_dict(resnet50_model)
    path = tmp_path_factory.mktemp("released") / "best_model.pt"
    torch.save(state, path)
    return path, state


def write(tmp_path: Path, state, name: str = "best_model.pt") -> Path:
    path = tmp_path / name
    torch.save(state, path)
    return path


# -- the released layout ---------------------------------------------------------------------------------
def test_learner_names_and_shapes_equal_the_released_resnet50_checkpoint(resnet50_model):
    ours = {f"hpn_learner.{k}": tuple(v.shape) for k, v in resnet50_model.hpn_learner.state_dict().items()}
    assert list(ours.items()) == list(reference_learner_shapes().items())
    assert sum(torch.Size(s).numel() for s in ours.values()) == 2_573_794


@pytest.mark.parametrize("backbone, channels", [("vgg16", (1, 3, 3)), ("resnet101", (3, 23, 4))])
def test_other_backbones_differ_only_in_the_first_squeezing_convs(backbone, channels):
    config = HSNetConfig(backbone=backbone, weights=None)
    with torch.device("meta"):
        learner = HPNLearner(config.level_channels(), get_backbone(backbone).level_strides)
    ours = {f"hpn_learner.{k}": tuple(v.shape) for k, v in learner.state_dict().items()}
    reference = dict(reference_learner_shapes())
    for level, c in zip(("encoder_layer4", "encoder_layer3", "encoder_layer2"), channels):
        for conv in ("conv1", "conv2"):
            key = f"hpn_learner.{level}.0.{conv}.weight"
            reference[key] = (reference[key][0], c, *reference[key][2:])
    assert ours == reference


def test_released_layout_uses_torchvision_backbone_names(released):
    _, state = released
    with torch.device("meta"):
        torchvision_keys = set(torchvision.models.resnet50().state_dict())
    expected = {f"module.backbone.{k}" for k in torchvision_keys} | {f"module.{k}" for k in reference_learner_shapes()}
    assert set(state) == expected


def test_released_checkpoint_gives_the_same_logits_and_votes(resnet50_model, released):
    path, _ = released
    loaded = HSNet.from_official_checkpoint(path).eval()
    assert loaded.config.backbone == "resnet50"
    # the checkpoint's path is not the backbone's weights: the config rebuilds the architecture, nothing read
    assert loaded.config.weights is None and HSNet(loaded.config).config == loaded.config
    assert HSNet.from_official_checkpoint(path, backbone="resnet50").config.backbone == "resnet50"
    query, supports, masks = episode()
    with torch.no_grad():
        assert torch.equal(loaded(query, supports[:, 0], masks[:, 0]), resnet50_model(query, supports[:, 0], masks[:, 0]))
        assert torch.equal(loaded.predict_mask(query, supports, masks), resnet50_model.predict_mask(query, supports, masks))
    assert not any(p.requires_grad for p in loaded.backbone_parameters())
    assert not loaded.backbone.training


def test_released_checkpoint_loads_onto_the_cpu_without_the_module_prefix_too(resnet50_model, released, tmp_path):
    _, state = released
    path = write(tmp_path, {k.removeprefix("module."): v for k, v in state.items()})
    loaded = HSNet.from_official_checkpoint(path, map_location="cpu")
    for key, value in resnet50_model.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key


def test_released_vgg16_checkpoint_is_recognised_and_its_classifier_dropped(tmp_path):
    torch.manual_seed(3)
    model = HSNet(HSNetConfig(backbone="vgg16", weights=None)).eval()
    state = {f"module.{k}": v for k, v in model.state_dict().items()}
    # The authors' VGG16 also holds classifier.{0,3,6} (about 124M values). The loader drops them unread, so
    # they are written here under their real names but shrunk, to keep the file small.
    for i in (0, 3, 6):
        state[f"module.backbone.classifier.{i}.weight"] = torch.randn(4, 4)
        state[f"module.backbone.classifier.{i}.bias"] = torch.randn(4)
    loaded = HSNet.from_official_checkpoint(write(tmp_path, state))
    assert loaded.config.backbone == "vgg16"
    query, supports, masks = episode()
    with torch.no_grad():
        assert torch.equal(loaded(query, supports[:, 0], masks[:, 0]), model(query, supports[:, 0], masks[:, 0]))
    with pytest.raises(ValueError, match="vgg16 backbone, not resnet50"):
        HSNet.from_official_checkpoint(tmp_path / "best_model.pt", backbone="resnet50")


@pytest.mark.parametrize("change, names", [
    ("missing", ["hpn_learner.decoder2.2.bias", "backbone.layer3.2.bn2.running_var", "2 missing"]),
    ("extra", ["hpn_learner.encoder_layer4.9.weight", "1 unexpected"]),
    ("shape", ["hpn_learner.decoder1.0.weight", "(128, 128, 3, 3)", "(128, 128, 5, 5)"]),
])
def test_keys_that_do_not_fit_are_reported_by_name(released, tmp_path, change, names):
    _, state = released
    state = dict(state)
    if change == "missing":
        del state["module.hpn_learner.decoder2.2.bias"], state["module.backbone.layer3.2.bn2.running_var"]
    elif change == "extra":
        state["module.hpn_learner.encoder_layer4.9.weight"] = torch.ones(3)
    else:
        state["module.hpn_learner.decoder1.0.weight"] = torch.zeros(128, 128, 5, 5)
    path = write(tmp_path, state)
    with pytest.raises(ValueError) as err:
        HSNet.from_official_checkpoint(path)
    message = str(err.value)
    assert str(path) in message and all(n in message for n in names), message


def test_checkpoint_of_another_backbone_is_a_clear_error(released):
    path, _ = released
    with pytest.raises(ValueError, match="resnet50 backbone, not resnet101"):
        HSNet.from_official_checkpoint(path, backbone="resnet101")
    with pytest.raises(ValueError, match="unknown backbone 'resnet18'"):
        HSNet.from_official_checkpoint(path, backbone="resnet18")


def test_learner_of_an_unknown_backbone_is_a_clear_error(released, tmp_path):
    _, state = released
    state = dict(state)
    for conv in ("conv1", "conv2"):
        state[f"module.hpn_learner.encoder_layer3.0.{conv}.weight"] = torch.zeros(16, 17, 5, 5)
    path = write(tmp_path, state)
    with pytest.raises(ValueError, match="17 input channels"):
        HSNet.from_official_checkpoint(path)


# -- unreadable and foreign files ------------------------------------------------------------------------
def test_missing_checkpoint_file_is_named(tmp_path):
    for load in (HSNet.load, HSNet.from_official_checkpoint):
        with pytest.raises(FileNotFoundError, match="nothere.pt"):
            load(tmp_path / "nothere.pt")


@pytest.mark.parametrize("content", [b"not a checkpoint at all", b"PK\x03\x04 truncated zip"])
def test_unreadable_checkpoint_is_a_clear_error(tmp_path, content):
    path = tmp_path / "broken.pt"
    path.write_bytes(content)
    for load in (HSNet.load, HSNet.from_official_checkpoint):
        with pytest.raises(ValueError, match="cannot read checkpoint .*broken.pt"):
            load(path)


def test_truncated_released_checkpoint_is_a_clear_error(released, tmp_path):
    path, _ = released
    broken = tmp_path / "half.pt"
    broken.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(ValueError, match="cannot read checkpoint .*half.pt"):
        HSNet.from_official_checkpoint(broken)


def test_foreign_checkpoints_point_to_the_right_loader(resnet50_model, released, tmp_path):
    official, _ = released
    with pytest.raises(ValueError, match="from_official_checkpoint"):
        HSNet.load(official)
    ours = resnet50_model.save(tmp_path / "ours.pt")
    with pytest.raises(ValueError, match="HSNet.load"):
        HSNet.from_official_checkpoint(ours)
    other = write(tmp_path, [torch.zeros(3)], "list.pt")
    with pytest.raises(ValueError, match="not a released HSNet state dict"):
        HSNet.from_official_checkpoint(other)
    no_learner = write(tmp_path, {"module.backbone.conv1.weight": torch.zeros(64, 3, 7, 7)}, "nolearner.pt")
    with pytest.raises(ValueError, match="not an HSNet state dict"):
        HSNet.from_official_checkpoint(no_learner)


# -- hsnetlib's own format -------------------------------------------------------------------------------
def test_save_load_round_trip_keeps_config_weights_and_extras(tmp_path):
    torch.manual_seed(1)
    model = HSNet(HSNetConfig(backbone="resnet50", weights=None, hypercorrelation="deep", pyramid=(2, 3), block_layers=2,
                  kernel="separable")).eval()
    with torch.no_grad():
        for bn in (m for m in model.hpn_learner.modules() if isinstance(m, torch.nn.BatchNorm1d)):
            bn.running_mean.normal_()  # buffers must travel too
    path = model.save(tmp_path / "sub" / "model.pt", epoch=7, miou=12.5)
    assert not [p for p in path.parent.iterdir() if p.name != "model.pt"], "no temporary files left behind"
    payload = torch.load(path, weights_only=True)
    assert payload["format"] == "hsnetlib" and payload["epoch"] == 7 and payload["miou"] == 12.5
    loaded = HSNet.load(path).eval()
    assert loaded.config == model.config
    assert loaded.config.pyramid == (2, 3) and loaded.config.kernel == "separable"
    query, supports, masks = episode()
    with torch.no_grad():
        assert torch.equal(loaded(query, supports[:, 0], masks[:, 0]), model(query, supports[:, 0], masks[:, 0]))
    for key, value in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key


def test_hsnetlib_checkpoint_that_does_not_fit_its_config_names_the_keys(resnet50_model, tmp_path):
    path = resnet50_model.save(tmp_path / "model.pt")
    payload = torch.load(path, weights_only=True)
    payload["config"]["block_layers"] = 2
    torch.save(payload, path)
    with pytest.raises(ValueError, match="unexpected key.*hpn_learner.encoder_layer"):
        HSNet.load(path)


# -- backbone weights from a local file ------------------------------------------------------------------
def test_backbone_weights_from_a_local_torchvision_file(tmp_path):
    torch.manual_seed(2)
    net = torchvision.models.resnet50()
    path = write(tmp_path, net.state_dict(), "resnet50-0676ba61.pth")  # torchvision's file, fc included
    model = HSNet(HSNetConfig(backbone="resnet50", weights=path))
    assert model.config.weights == str(path)
    ours = model.backbone.state_dict()
    assert set(net.state_dict()) - set(ours) == {"fc.weight", "fc.bias"}
    assert all(torch.equal(ours[k], v) for k, v in net.state_dict().items() if k in ours)


def test_unreadable_backbone_weights_are_named(tmp_path):
    path = tmp_path / "weights.pth"
    path.write_bytes(b"garbage")
    with pytest.raises(ValueError, match="weights.pth"):
        HSNet(HSNetConfig(backbone="resnet50", weights=path))



# -- what a checkpoint says of its training (02_evaluate's training benchmark and convergence) --------------------
@pytest.mark.parametrize("best, converged", [(12.0, True), (3.0, False)])
def test_a_training_checkpoint_says_its_benchmark_and_whether_it_converged(resnet50_model, tmp_path, best, converged):
    from hsnetlib.suite.notebook import CONVERGED_MIOU, CheckpointTraining, checkpoint_training

    assert 3.0 < CONVERGED_MIOU <= 12.0
    path = resnet50_model.save(tmp_path / "best.pt", train_config={"benchmark": "pascal-all"}, best_val_miou=best)
    assert checkpoint_training(path) == CheckpointTraining("pascal-all", converged)


def test_an_authors_checkpoint_or_a_saved_model_is_unknown_not_unconverged(released, resnet50_model, tmp_path):
    from hsnetlib.suite.notebook import CheckpointTraining, checkpoint_training

    assert checkpoint_training(released[0]) == CheckpointTraining(None, None)
    assert checkpoint_training(resnet50_model.save(tmp_path / "model.pt")) == CheckpointTraining(None, None)
