"""Building on hsnetlib from outside the package (README "Extending"): a backbone, a benchmark in a new layout and a
model option with its ablation study, each registered in one place, then trained, evaluated, compared and tabled.

Nothing here edits hsnetlib: the toy backbone, layout, model and study are registered by the ``toys`` fixture and
removed again when the module's tests are done, so no other test sees them.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from hsnetlib import evaluate, model as model_lib, results, train
from hsnetlib.backbones import BackboneSpec, freeze, register_backbone, unregister_backbone, weights_file
from hsnetlib.cli import build_parser, train_config
from hsnetlib.data import (
    BenchmarkSpec, EpisodeIndex, Layout, Loaded, build_dataset, read_grey_mask, read_rgb, register_benchmark,
    unregister_benchmark,
)
from hsnetlib.model import HSNet, HSNetConfig, option, register_model, unregister_model
from hsnetlib.suite import notebook, study as study_lib
from hsnetlib.suite.records import write_run_record

IMG = 32  # feature strides 8/16/16: 4x4, 2x2, 2x2 feature maps, each level squeezed to one 1x1 support grid


# -- (a) a backbone: a tiny frozen conv net with one tap per pyramid level ----------------------------------------
def build_tiny(weights: str | None) -> nn.Module:
    net = nn.Sequential(nn.Conv2d(3, 8, 8, stride=8), nn.ReLU(), nn.Conv2d(8, 16, 2, stride=2), nn.ReLU(),
                        nn.Conv2d(16, 16, 1), nn.ReLU())
    if weights is not None:
        net.load_state_dict(torch.load(weights_file("tiny-convnet", weights, ()), map_location="cpu"))
    return freeze(net)


def tiny_taps(net: nn.Module, img: torch.Tensor) -> list[torch.Tensor]:
    taps, x = [], img
    for i, layer in enumerate(net):
        x = layer(x)
        if i % 2 == 1:  # after each ReLU: (B, 8, H/8, W/8), (B, 16, H/16, W/16), (B, 16, H/16, W/16)
            taps.append(x)
    return taps


TINY = BackboneSpec(name="tiny-convnet", source="this test", build=build_tiny, taps=tiny_taps, level_taps=(1, 1, 1),
                    level_strides=(8, 16, 16), level_dims=(8, 16, 16), heads=(), pretrained=())


# -- (b) a benchmark in a new layout: images/CLASS-N.png, masks/CLASS-N.png, classes.txt "CLASS SPLIT" -------------
class ShapesLayout(Layout):
    """root/classes.txt lists "CLASS SPLIT" lines (split trn or test; val is test, as on PASCAL-5i); the images of
    a class are root/images/CLASS-N.png with the binary masks root/masks/CLASS-N.png. Queries take the classes in
    turn (as many per class as the smallest class has images)."""

    def __init__(self, config, spec):
        super().__init__(config)
        lines = [line.split() for line in (self.root / "classes.txt").read_text().splitlines() if line.strip()]
        self.class_names = [name for name, _ in lines]
        self.split_of = dict(lines)

    def index(self, fold: int, split: str) -> EpisodeIndex:
        wanted = "test" if split == "val" else split
        class_ids = [i for i, name in enumerate(self.class_names) if self.split_of[name] == wanted]
        candidates = {c: sorted(p.stem for p in (self.root / "images").glob(f"{self.class_names[c]}-*.png"))
                      for c in class_ids}
        queries = [(name, c) for round in zip(*(candidates[c] for c in class_ids)) for name, c in zip(round, class_ids)]
        return EpisodeIndex(class_ids, queries, candidates, draw_class_first=False, n_episodes=len(queries))

    def load(self, name: str, class_id: int) -> Loaded:
        return Loaded(read_rgb(self.root / "images" / f"{name}.png"),
                      read_grey_mask(self.root / "masks" / f"{name}.png"), None)


SHAPES = BenchmarkSpec(name="toy-shapes", label="Toy shapes", layout=ShapesLayout, test_episodes=4)


# -- (c) a model option and its ablation study -------------------------------------------------------------------
@dataclass(kw_only=True)
class DeepDecoderConfig(HSNetConfig):
    architecture: ClassVar[str] = "hsnet-deep-decoder"
    extra_decoder_layers: int = option(0, choices=(0, 1, 2), variant=True, paper="this test",
                                       help="extra (3x3 conv, ReLU) layers ending the first decoder block")


class DeepDecoderHSNet(HSNet):
    def __init__(self, config: DeepDecoderConfig):
        super().__init__(config)
        for _ in range(config.extra_decoder_layers):  # appended: HSNet's own parameter names stay as they are
            self.hpn_learner.decoder1.extend([nn.Conv2d(64, 64, 3, padding=1), nn.ReLU(inplace=True)])


DECODER_STUDY = study_lib.Study("deep_decoder", "extra_decoder_layers", lambda n: f"+{n} layers")


@pytest.fixture(scope="module")
def toys():
    register_backbone(TINY)
    register_benchmark(SHAPES)
    register_model(DeepDecoderConfig, DeepDecoderHSNet)
    study_lib.register_study(DECODER_STUDY)
    yield
    study_lib.unregister_study(DECODER_STUDY.name)
    unregister_model(DeepDecoderConfig.architecture)
    unregister_benchmark(SHAPES.name)
    unregister_backbone(TINY.name)


@pytest.fixture(scope="module")
def shapes_root(tmp_path_factory) -> Path:
    """Four shape classes, four 32x32 images each: squares and discs to train on, bars and rings to test on."""
    root = tmp_path_factory.mktemp("shapes")
    (root / "images").mkdir()
    (root / "masks").mkdir()
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:IMG, :IMG]
    shapes = {"square": lambda cy, cx, r: (abs(yy - cy) < r) & (abs(xx - cx) < r),
              "disc": lambda cy, cx, r: (yy - cy) ** 2 + (xx - cx) ** 2 < r * r,
              "bar": lambda cy, cx, r: (abs(yy - cy) < r // 3) & (abs(xx - cx) < 2 * r),
              "ring": lambda cy, cx, r: abs(np.hypot(yy - cy, xx - cx) - r) < 2}
    for name, shape in shapes.items():
        for n in range(4):
            cy, cx, r = rng.integers(10, 22), rng.integers(10, 22), rng.integers(4, 8)
            mask = shape(cy, cx, r)
            image = rng.integers(0, 80, (IMG, IMG, 3)).astype(np.uint8)
            image[mask] = rng.integers(150, 255, 3)
            Image.fromarray(image).save(root / "images" / f"{name}-{n}.png")
            Image.fromarray((mask * 255).astype(np.uint8)).save(root / "masks" / f"{name}-{n}.png")
    (root / "classes.txt").write_text("square trn\ndisc trn\nbar test\nring test\n")
    return root


def toy_config(layers: int) -> DeepDecoderConfig:
    return DeepDecoderConfig(backbone="tiny-convnet", weights=None, extra_decoder_layers=layers)


def test_registered_things_build(toys, shapes_root):
    test = build_dataset("toy-shapes", shapes_root, fold=0, split="test", shot=1, img_size=IMG)
    assert len(test) == 4 and test.class_names == ["square", "disc", "bar", "ring"]
    assert set(test.class_ids) == {2, 3}
    episode = test[0]
    assert episode["query_img"].shape == (3, IMG, IMG) and episode["support_imgs"].shape == (1, 3, IMG, IMG)

    plain, deep = HSNet.from_config(toy_config(0)), HSNet.from_config(toy_config(2).to_dict())
    assert type(deep) is DeepDecoderHSNet and deep.config.extra_decoder_layers == 2
    assert deep.num_learnable_parameters() == plain.num_learnable_parameters() + 2 * (64 * 64 * 9 + 64)
    logits = deep(episode["query_img"][None], episode["support_imgs"], episode["support_masks"])  # K = B = 1
    assert logits.shape == (1, 2, IMG, IMG)
    with pytest.raises(TypeError, match="builds a DeepDecoderHSNet"):
        HSNet(toy_config(1))  # the plain class would silently ignore the option

    assert "extra_decoder_layers" in model_lib.variant_fields()
    assert model_lib.variant_fields(HSNetConfig) == model_lib.variant_fields()[:-1]
    assert results.registries.variant_defaults()["extra_decoder_layers"] == 0


def test_cli_sees_the_option(toys):
    args = build_parser().parse_args(["train", "--architecture", "hsnet-deep-decoder", "--backbone", "tiny-convnet",
                                      "--weights", "none", "--extra-decoder-layers", "1", "--benchmark", "toy-shapes"])
    config = train_config(args)
    assert config.model == toy_config(1)
    args = build_parser().parse_args(["train", "--extra-decoder-layers", "1"])
    with pytest.raises(train.ConfigError, match="extra_decoder_layers"):
        train_config(args)  # HSNet itself has no such option


def test_train_evaluate_study_and_results(toys, shapes_root, tmp_path):
    run_dirs, configs = {}, {}
    for layers in (0, 1):
        label = DECODER_STUDY.label(layers)
        configs[label] = train.TrainConfig(
            model=toy_config(layers), benchmark="toy-shapes", datapath=str(shapes_root), img_size=IMG, bsz=2,
            epochs=2, train_episodes=2, val_episodes=2, lr=1e-3, workers=0, device="cpu", progress=False,
            run_dir=str(tmp_path / "trainings" / label))
        summary = train.train(configs[label])
        assert len(summary["history"]) == 2
        run_dirs[label] = summary["run_dir"]

    # the option is part of what a training's result (and so the training cache) depends on
    stored = json.loads((Path(run_dirs["+1 layers"]) / "config.json").read_text())
    assert stored["model"]["architecture"] == "hsnet-deep-decoder" and stored["model"]["extra_decoder_layers"] == 1
    assert train.TrainConfig(**stored) == configs["+1 layers"]
    assert train.result_dict(configs["+0 layers"]) != train.result_dict(configs["+1 layers"])

    # the checkpoint reloads as the registered model; evaluation scores it on the registered test episodes
    best = HSNet.load(Path(run_dirs["+1 layers"]) / "best.pt")
    assert type(best) is DeepDecoderHSNet and best.config == toy_config(1)
    test = build_dataset("toy-shapes", shapes_root, fold=0, split="test", shot=1, img_size=IMG)
    scored = evaluate.evaluate(best, test, device="cpu", progress=False, n_bootstrap=50)
    assert len(scored.episodes) == 4 and 0 <= scored.miou <= 100
    assert scored.config["model"]["extra_decoder_layers"] == 1

    # the study: the trainings gathered, every variant scored on the same episodes, compared with the reference
    data = notebook.Data("toy-shapes", shapes_root, synthetic=False)
    trainings = study_lib.gather_trainings(run_dirs, data, fold=0)
    assert DECODER_STUDY.reference == "+0 layers"
    result = study_lib.evaluate_variants(DECODER_STUDY, data, 0, trainings, DECODER_STUDY.reference, shots=[1],
                                         episodes=None, baselines=False, device="cpu", progress=False)
    study_lib.check_result(result, [1])
    table = study_lib.variant_table(result)
    assert list(table["label"]) == ["+0 layers", "+1 layers"]
    assert np.isclose(table["delta_miou"].iloc[1], table["miou"].iloc[1] - table["miou"].iloc[0])

    # the results table, from the run record the study writes
    params = {"benchmark": "toy-shapes", "fold": 0, "out_dir": str(tmp_path / "runs" / "deep_decoder"),
              "device": "cpu"}
    study_lib.write_record(result, "deep_decoder", params, trainings)
    written = results.write_results(tmp_path / "runs", tmp_path / "results")
    frame = written["tables"]["benchmark-toy-shapes"]  # a line per variant, a cell per fold, their mean, FB-IoU
    assert sorted(set(frame["method"])) == ["+0 layers (random-init backbone)", "+1 layers (random-init backbone)"]
    assert set(frame["column"]) == {"fold0", "mean", "fbiou"} and set(frame["runs"]) == {"deep_decoder"}
    assert set(frame["status"]) <= {"measured", "not converged"}  # two steps may leave an all-background model
    evaluations = written["data"]["evaluations"]
    assert sorted(evaluations["extra_decoder_layers"]) == [0, 1]
    assert sorted(evaluations["label"]) == ["+0 layers", "+1 layers"]
    markdown = (tmp_path / "results" / "benchmark-toy-shapes.md").read_text()
    assert "Toy shapes" in markdown and "+1 layers" in markdown


def test_a_name_registers_once(toys):
    for register, thing in ((register_backbone, TINY), (register_benchmark, SHAPES),
                            (study_lib.register_study, DECODER_STUDY)):
        with pytest.raises(ValueError, match="replace=True"):
            register(thing)
    with pytest.raises(ValueError, match="replace=True"):
        register_model(DeepDecoderConfig, DeepDecoderHSNet)
    with pytest.raises(ValueError, match="must name its model"):
        register_model(dataclass(kw_only=True)(type("Unnamed", (HSNetConfig,), {})), HSNet)
    with pytest.raises(ValueError, match="cannot be unregistered"):
        unregister_model("hsnet")
