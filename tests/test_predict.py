"""Prediction paths that feed masks and scores: the original-size rule of ``predict_mask`` (resize the
logits, then argmax and vote), the ``predict`` command's mask files against ``predict_mask`` on the same
inputs, and the ``test`` command's scores against ``evaluate()`` on the same episodes; the user's images
(EXIF orientation, image size), one checkpoint read, several classes against separate binary predictions,
one overlay for tensors and PIL images.
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

from conftest import random_resnet50
from hsnetlib import predict
from hsnetlib.cli import main
from hsnetlib.data import build_dataset, image_to_tensor, mask_to_tensor
from hsnetlib.evaluate import evaluate
from hsnetlib.model import HSNet
from hsnetlib.synthetic import generate

SIZE = 64


@pytest.fixture(scope="module")
def model() -> HSNet:
    return random_resnet50()


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


# -- the user's own images: EXIF orientation, image size, one checkpoint read -------------------------------
def save_oriented(image: Image.Image, path: Path, orientation: int) -> Path:
    """`image`'s pixels stored with an EXIF orientation tag (viewers show them rotated / flipped)."""
    exif = Image.Exif()
    exif[0x0112] = orientation
    image.save(path, exif=exif.tobytes())
    return path


def test_query_and_support_are_read_as_viewers_show_them(model, checkpoint, fss_root, tmp_path):
    """A query stored rotated with EXIF orientation 6 is predicted as shown (the mask has the shown size and
    equals the prediction on the upright pixels); a support stored rotated with its mask drawn on the shown image
    gives the same prediction as the upright pair."""
    folder = fss_root / "FSS-1000" / "egg"
    upright_query, upright_support = read_rgb(folder / "3.jpg"), read_rgb(folder / "1.jpg")
    # orientation 6: viewers rotate the stored pixels 90 degrees clockwise, so store them turned counter-clockwise
    (tmp_path / "rotated").mkdir()  # PNG, lossless, so that both predictions see the same pixels
    query = save_oriented(upright_query.transpose(Image.Transpose.ROTATE_90), tmp_path / "rotated" / "q.png", 6)
    support = save_oriented(upright_support.transpose(Image.Transpose.ROTATE_90), tmp_path / "s.png", 6)
    out = tmp_path / "pred"
    assert main(["predict", "--load", str(checkpoint), "--support", str(support), str(folder / "1.png"),
                 "--query", str(query), "--out", str(out), "--img-size", str(SIZE), "--device", "cpu",
                 "--no-progress"]) == 0
    reference = tmp_path / "reference"
    upright_support.save(tmp_path / "s_upright.png")
    upright_query.save(tmp_path / "q.png")
    assert main(["predict", "--load", str(checkpoint), "--support", str(tmp_path / "s_upright.png"),
                 str(folder / "1.png"), "--query", str(tmp_path / "q.png"), "--out", str(reference), "--img-size",
                 str(SIZE), "--device", "cpu", "--no-progress"]) == 0
    written = np.asarray(Image.open(out / "q_mask.png"))
    assert written.shape == (upright_query.height, upright_query.width) and upright_query.width != upright_query.height
    np.testing.assert_array_equal(written, np.asarray(Image.open(reference / "q_mask.png")))


def test_a_support_mask_of_the_stored_pixels_is_an_error_naming_exif(fss_root, tmp_path, capsys, checkpoint):
    folder = fss_root / "FSS-1000" / "egg"
    support = save_oriented(read_rgb(folder / "1.jpg"), tmp_path / "s.jpg", 8)  # shown rotated: W and H swap
    args = ["predict", "--load", str(checkpoint), "--support", str(support), str(folder / "1.png"), "--query",
            str(folder / "3.jpg"), "--out", str(tmp_path / "o"), "--img-size", str(SIZE), "--no-progress"]
    assert main(args) == 1
    err = capsys.readouterr().err
    assert str(folder / "1.png") in err and str(support) in err and "EXIF orientation 8" in err


@pytest.mark.parametrize("size", ["1", "31", "-5"])
def test_img_size_below_the_backbone_stride_is_a_usage_error(checkpoint, fss_root, tmp_path, capsys, size):
    folder = fss_root / "FSS-1000" / "egg"
    with pytest.raises(SystemExit) as exit_:
        main(["predict", "--load", str(checkpoint), "--support", str(folder / "1.jpg"), str(folder / "1.png"),
              "--query", str(folder / "3.jpg"), "--out", str(tmp_path), "--img-size", size])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and "--img-size" in err and ">= 32" in err
    assert not list(tmp_path.iterdir())


def test_predict_checks_img_size(model, fss_root, tmp_path):
    folder = fss_root / "FSS-1000" / "egg"
    with pytest.raises(ValueError, match="img_size must be an integer >= 32"):
        predict.predict(model, [(folder / "1.jpg", folder / "1.png")], [folder / "3.jpg"], tmp_path, img_size=8)


@pytest.mark.parametrize("official", [False, True], ids=["hsnetlib", "released"])
def test_load_model_reads_the_checkpoint_once(model, checkpoint, tmp_path, monkeypatch, official):
    path = checkpoint
    if official:
        path = tmp_path / "best_model.pt"
        torch.save({f"module.{k}": v for k, v in model.state_dict().items()}, path)
    reads = []
    real_load = torch.load
    monkeypatch.setattr(torch, "load", lambda *a, **k: reads.append(a[0]) or real_load(*a, **k))
    loaded = predict.load_model(path)
    assert reads == [path]
    for key, value in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key


# -- several classes at once ---------------------------------------------------------------------------------
def class_episode(shots: tuple[int, ...], seed: int = 5):
    """A query and, per class, its own supports with different masks."""
    g = torch.Generator().manual_seed(seed)
    query = torch.randn(1, 3, SIZE, SIZE, generator=g)
    classes = []
    for c, k in enumerate(shots):
        masks = torch.zeros(1, k, SIZE, SIZE)
        for j in range(k):
            masks[0, j, 4 + 6 * c:30 + 8 * c + 2 * j, 6 * j:40 + 5 * c] = 1
        classes.append((torch.randn(1, k, 3, SIZE, SIZE, generator=g), masks))
    return query, classes


@pytest.mark.parametrize("shots, original", [((1, 1, 1), None), ((2, 1, 3), (50, 83))])
def test_label_map_agrees_with_separate_binary_predictions(model, shots, original):
    query, classes = class_episode(shots)
    result = predict.predict_labels(model, query, classes, original)
    labels, masks, probabilities = result["labels"], result["masks"], result["probabilities"]
    with torch.no_grad():
        binary = torch.stack([model.predict_mask(query, imgs, ms, original_size=original) for imgs, ms in classes], 1)
    assert torch.equal(masks, binary)  # each class decided exactly as its own binary episode
    assert labels.shape == binary[:, 0].shape and labels.dtype == torch.int64
    on = binary.bool()
    count = on.sum(1)
    assert torch.equal(labels == 0, count == 0)  # background where no class says foreground
    single = count == 1
    assert torch.equal(labels[single], on.int().argmax(1)[single] + 1)  # the one class that says foreground
    overlap = count > 1
    expected = torch.where(on, probabilities, torch.tensor(-1.0)).argmax(1) + 1
    assert torch.equal(labels[overlap], expected[overlap])
    if max(shots) == 1:  # a 1-shot decision is the argmax: foreground probability above 0.5
        assert torch.equal(probabilities > 0.5, on)
    assert (count == 0).any() and single.any(), "the episode must show background and single-class pixels"


def test_label_map_rule_on_overlaps_and_ties():
    masks = torch.tensor([[1, 1, 0, 1], [1, 1, 0, 0], [0, 1, 0, 1]]).view(1, 3, 1, 4)
    probabilities = torch.tensor([[0.6, 0.7, 0.9, 0.8], [0.9, 0.7, 0.2, 0.1], [0.1, 0.7, 0.1, 0.95]]).view(1, 3, 1, 4)
    labels = predict.label_map(masks, probabilities)
    # pixel 0: classes 1 and 2 on, 2 more probable; pixel 1: exact three-way tie -> class 1; pixel 2: none on
    # (class 1's high probability does not count without its decision); pixel 3: classes 1 and 3, 3 more probable
    assert labels.view(-1).tolist() == [2, 1, 0, 3]


def test_predict_command_with_several_classes(model, checkpoint, fss_root, tmp_path, capsys):
    root = fss_root / "FSS-1000"
    classes = {"egg": [1, 2], "fig": [1], "gnu": [3]}
    args = ["predict", "--load", str(checkpoint), "--img-size", str(SIZE), "--device", "cpu", "--no-progress",
            "--out", str(tmp_path / "out"), "--query", str(root / "egg" / "5.jpg"), str(root / "fig" / "6.jpg")]
    for name, numbers in classes.items():
        args += ["--class", name]
        for n in numbers:
            args += ["--support", str(root / name / f"{n}.jpg"), str(root / name / f"{n}.png")]
    assert main(args) == 0
    assert json.loads((tmp_path / "out" / "classes.json").read_text()) == {"0": "background", "1": "egg", "2": "fig",
                                                                          "3": "gnu"}
    class_supports = [predict.read_supports([(root / name / f"{n}.jpg", root / name / f"{n}.png") for n in numbers],
                                            SIZE, torch.device("cpu")) for name, numbers in classes.items()]
    seen = set()
    for query in (root / "egg" / "5.jpg", root / "fig" / "6.jpg"):
        image = read_rgb(query)
        expected = predict.predict_labels(model, image_to_tensor(image, (SIZE, SIZE))[None], class_supports,
                                          (image.height, image.width))["labels"][0].numpy()
        written = np.asarray(Image.open(tmp_path / "out" / f"{query.stem}_labels.png"))
        np.testing.assert_array_equal(written, expected)
        seen |= set(np.unique(written).tolist())
        overlay = Image.open(tmp_path / "out" / f"{query.stem}_overlay.png")
        assert overlay.width == image.width and overlay.height > image.height  # the legend below the image
    assert len(seen) > 1
    assert "egg" in capsys.readouterr().out


@pytest.mark.parametrize("order, message", [
    (["--support", "A", "B", "--class", "x", "--support", "A", "B"], "before the first --class"),
    (["--class", "x", "--class", "y", "--support", "A", "B"], "--class x has no --support"),
    (["--class", "x", "--support", "A", "B", "--class", "x", "--support", "A", "B"], "--class x given twice"),
    (["--class", "x", "--support", "A"], "IMG MASK pairs"),
])
def test_class_option_errors(checkpoint, tmp_path, capsys, order, message):
    with pytest.raises(SystemExit) as exit_:
        main(["predict", "--load", str(checkpoint), "--query", "q.jpg", "--out", str(tmp_path), *order])
    assert exit_.value.code == 2 and message in capsys.readouterr().err


def test_a_class_without_supports_at_the_end_is_an_error(checkpoint, fss_root, tmp_path, capsys):
    folder = fss_root / "FSS-1000" / "egg"
    assert main(["predict", "--load", str(checkpoint), "--query", str(folder / "3.jpg"), "--out", str(tmp_path),
                 "--class", "x", "--support", str(folder / "1.jpg"), str(folder / "1.png"), "--class", "y"]) == 1
    assert "--class y has no --support" in capsys.readouterr().err


# -- one overlay for tensors and PIL images ----------------------------------------------------------------
def test_overlay_serves_tensor_and_pil_callers_alike():
    from hsnetlib import viz

    g = torch.Generator().manual_seed(0)
    tensor = image_to_tensor(Image.fromarray(torch.randint(0, 256, (20, 30, 3), generator=g).byte().numpy()), (20, 30))
    pil = viz.to_pil(viz.denormalize(tensor))
    mask = torch.zeros(20, 30)
    mask[5:12, 3:20] = 1
    from_tensor = viz.overlay(tensor, mask, (1.0, 0.0, 0.0), 0.5)
    from_pil = viz.overlay(pil, mask.numpy() > 0.5, (1.0, 0.0, 0.0), 0.5)
    assert np.abs(from_tensor - from_pil).max() <= 0.5 / 255 + 1e-9  # only the 8-bit rounding of the PIL image
    np.testing.assert_array_equal(viz.to_pil(from_pil).getpixel((0, 0)), pil.getpixel((0, 0)))  # off the mask: unchanged
    tinted = np.asarray(viz.to_pil(from_pil))[8, 10]
    assert tinted[0] >= np.asarray(pil)[8, 10][0] and tinted[1] <= np.asarray(pil)[8, 10][1]


def test_img_size_check_follows_the_backbone_registry():
    """The smallest size is the deepest feature stride (rounded up to the input multiple), per backbone or over
    all registered ones; a ViT/14 takes multiples of 14 only, the error naming the nearest."""
    assert predict.min_img_size("resnet50") == 32 and predict.min_img_size("vit_small_patch14_dinov2") == 14
    assert predict.min_img_size() == 32
    assert predict.check_img_size(392, backbone="vit_small_patch14_dinov2") == 392
    with pytest.raises(ValueError, match=r"--img-size=400: backbone vit_small_patch14_dinov2 .*392 and 406"):
        predict.check_img_size(400, "--img-size", backbone="vit_small_patch14_dinov2")
    with pytest.raises(ValueError, match=r"img_size must be an integer >= 14 "):
        predict.check_img_size(13, backbone="vit_small_patch14_dinov2")
