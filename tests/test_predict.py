"""Prediction paths that feed masks and scores: the original-size rule of ``predict_mask`` (resize the
logits, then argmax and vote), the ``predict`` command's mask files against ``predict_mask`` on the same
inputs, and the ``test`` command's scores against ``evaluate()`` on the same episodes.
Random-weight ResNet50 at 64 px on the conftest FSS layout (non-square images) and a small synthetic one.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from hsnetlib.cli import main
from hsnetlib.data import build_dataset, image_to_tensor, mask_to_tensor
from hsnetlib.evaluate import evaluate
from hsnetlib.model import HSNet, HSNetConfig
from hsnetlib.synthetic import generate

SIZE = 64


@pytest.fixture(scope="module")
def model() -> HSNet:
    torch.manual_seed(0)
    return HSNet(HSNetConfig(backbone="resnet50", weights=None)).eval()


@pytest.fixture(scope="module")
def checkpoint(model, tmp_path_factory) -> Path:
    return model.save(tmp_path_factory.mktemp("model") / "model.pt")


def learner_logits(model: HSNet, query, support, mask) -> torch.Tensor:
    """The learner's 2-channel output before any resize (B, 2, h, w), through the public pieces."""
    levels = model.hypercorrelation(query, support, mask)  # deepest level first
    return model.hpn_learner(dict(zip(sorted(model.config.pyramid, reverse=True), levels)))


def episode(shots: int, seed: int = 3):
    g = torch.Generator().manual_seed(seed)
    masks = torch.zeros(1, shots, SIZE, SIZE)
    for k in range(shots):
        masks[0, k, 8 * k:40 + 4 * k, 10:50 - 6 * k] = 1
    return torch.randn(1, 3, SIZE, SIZE, generator=g), torch.randn(1, shots, 3, SIZE, SIZE, generator=g), masks


# -- the original-size rule -------------------------------------------------------------------------------
@pytest.mark.parametrize("shots, original", [(1, (50, 83)), (3, (97, 41))])
def test_original_size_resizes_the_logits_then_votes(model, shots, original):
    query, supports, masks = episode(shots)
    with torch.no_grad():
        votes = torch.zeros(1, *original)
        for k in range(shots):
            logits = learner_logits(model, query, supports[:, k], masks[:, k])
            assert logits.shape[-2:] != (SIZE, SIZE)  # the learner's output is coarser than the input
            votes += F.interpolate(logits, original, mode="bilinear", align_corners=True).argmax(1)
        expected = (votes / votes.max().clamp(min=1) >= 0.5).long()
        ours = model.predict_mask(query, supports, masks, original_size=original)
        at_input = model.predict_mask(query, supports, masks)
    assert ours.shape == (1, *original) and ours.dtype == torch.int64
    assert torch.equal(ours, expected)
    assert 0 < expected.float().mean() < 1, "a prediction with a boundary is needed to tell the rules apart"
    resized_mask = F.interpolate(at_input[None].float(), original, mode="nearest")[0].long()
    assert not torch.equal(ours, resized_mask), "resizing the input-size mask must differ from resizing the logits"


# -- python -m hsnetlib predict ---------------------------------------------------------------------------
def read_rgb(path: Path) -> Image.Image:
    return Image.open(path).convert("RGB")


def test_predict_command_writes_predict_mask(model, checkpoint, fss_root, tmp_path):
    folder = fss_root / "FSS-1000" / "egg"
    supports = [(folder / f"{n}.jpg", folder / f"{n}.png") for n in (1, 2)]
    queries = [folder / "3.jpg", folder / "4.jpg"]
    out = tmp_path / "pred"
    args = ["predict", "--load", str(checkpoint), "--support", *[str(p) for pair in supports for p in pair],
            "--query", *map(str, queries), "--out", str(out), "--img-size", str(SIZE), "--device", "cpu",
            "--no-progress"]
    assert main(args) == 0
    support_imgs = torch.stack([image_to_tensor(read_rgb(image), (SIZE, SIZE)) for image, _ in supports])[None]
    support_masks = torch.stack([mask_to_tensor(np.asarray(Image.open(mask).convert("L")) >= 128, (SIZE, SIZE))
                                 for _, mask in supports])[None]
    foreground = []
    for query in queries:
        image = read_rgb(query)
        assert image.width != image.height
        with torch.no_grad():
            expected = model.predict_mask(image_to_tensor(image, (SIZE, SIZE))[None], support_imgs, support_masks,
                                          original_size=(image.height, image.width))[0].numpy()
        written = np.asarray(Image.open(out / f"{query.stem}_mask.png"))
        assert written.shape == (image.height, image.width)
        np.testing.assert_array_equal(written, np.where(expected == 1, 255, 0))
        foreground.append(expected.mean())
    assert 0 < np.mean(foreground) < 1


# -- python -m hsnetlib test ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def small_fss(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("fss_small")
    generate(root, "fss", n_classes=10, images_per_class=3, size=40, seed=1)  # 3 test classes x 3 queries
    return root


@pytest.mark.parametrize("original_size", [False, True], ids=["input_size", "original_size"])
def test_test_command_scores_equal_evaluate(model, checkpoint, small_fss, tmp_path, original_size):
    out = tmp_path / "test"
    args = ["test", "--load", str(checkpoint), "--benchmark", "fss", "--datapath", str(small_fss), "--splits-dir",
            str(small_fss / "splits"), "--img-size", str(SIZE), "--nshot", "2", "--bsz", "4", "--seed", "0",
            "--logpath", str(out), "--device", "cpu", "--no-progress"]
    assert main(args + (["--use_original_imgsize"] if original_size else [])) == 0
    dataset = build_dataset("fss", small_fss, 0, "test", 2, img_size=SIZE, splits_dir=small_fss / "splits",
                            use_original_imgsize=original_size)
    result = evaluate(model, dataset, nshot=2, seed=0, device="cpu", progress=False)
    metrics = json.loads((out / "metrics.json").read_text())
    assert (metrics["miou"], metrics["fbiou"], metrics["ci95"]) == (result.miou, result.fbiou, list(result.ci95))
    written = pd.read_csv(out / "episodes.csv", keep_default_na=False)
    assert len(written) == len(result.episodes) == 9
    pd.testing.assert_frame_equal(written, result.episodes, check_dtype=False)
    assert 0 < result.episodes["fg_inter"].sum() < result.episodes["fg_union"].sum()
    sizes = [dataset[i]["org_query_imsize"].prod().item() if original_size else SIZE * SIZE for i in range(9)]
    assert (written["fg_inter"] + written["bg_union"]).tolist() == sizes
