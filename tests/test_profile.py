"""hsnetlib.profile (paper Table 4): FLOPs of single 4D layers against counts by hand, the split of an
episode's FLOPs into learner and the rest, the parameter count of the ResNet50 model (all three backbones'
totals: test_model.py)."""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from hsnetlib.conv4d import KERNELS
from hsnetlib.model import HSNet, HSNetConfig
from hsnetlib.profile import episode_inputs, measure_flops, profile_model

RESNET50_LEARNABLE = 2_573_794  # the official model's (../shared/reference/official-state-dict.tsv)

C, O, K, STRIDE = 3, 5, 3, 2
Q, S = (6, 7), (9, 8)  # query (Hq, Wq) and support (Hs, Ws) sides of the layer's input
STEM = (4, 2, 3, 10, 10)  # a 2D conv outside the learner: in, out channels, kernel, H, W


def by_hand(kernel: str) -> int:
    """FLOPs (multiply-add = 2) of one 4D layer on (1, C, *Q, *S) with support stride STRIDE; biases and
    batch norms not counted. Each output position (O, Hq, Wq, Hs', Ws') sums over C input channels and:
    center pivot: k^2 query + k^2 support neighbours; original: k^4; separable: k^2 over the support
    (C -> O), then k^2 over the query (O -> O)."""
    out = Q[0] * Q[1] * math.ceil(S[0] / STRIDE) * math.ceil(S[1] / STRIDE)
    return {"center_pivot": 2 * out * O * C * 2 * K ** 2,
            "original": 2 * out * O * C * K ** 4,
            "separable": 2 * out * O * (C + O) * K ** 2}[kernel]


class OneLayer(nn.Module):
    """The smallest model measure_flops takes: predict_mask runs a 2D conv, then the learner (one 4D layer)."""

    def __init__(self, kernel: str):
        super().__init__()
        c_in, c_out, k, _, _ = STEM
        self.stem = nn.Conv2d(c_in, c_out, k, padding=k // 2)
        self.hpn_learner = KERNELS[kernel](C, O, K, STRIDE).eval()

    def predict_mask(self, image: torch.Tensor, corr: torch.Tensor) -> torch.Tensor:
        return self.hpn_learner(corr).sum() + self.stem(image).sum()


@pytest.mark.parametrize("kernel", sorted(KERNELS))
def test_flops_of_one_4d_layer_equal_a_count_by_hand(kernel):
    c_in, c_out, k, h, w = STEM
    model = OneLayer(kernel)
    with torch.no_grad():
        out_shape = model.hpn_learner(torch.randn(1, C, *Q, *S)).shape
        learner, total = measure_flops(model, (torch.randn(1, c_in, h, w), torch.randn(1, C, *Q, *S)))
    assert out_shape == (1, O, *Q, math.ceil(S[0] / STRIDE), math.ceil(S[1] / STRIDE))
    assert learner * 1e9 == pytest.approx(by_hand(kernel), rel=1e-12)
    assert total * 1e9 == pytest.approx(by_hand(kernel) + 2 * h * w * c_out * c_in * k * k, rel=1e-12)


@pytest.fixture(scope="module")
def profiled():
    """ResNet50 only: the other backbones' models differ in the first squeezing convs alone, and their
    parameter totals are checked without a profile in test_model.py."""
    torch.manual_seed(0)
    model = HSNet(HSNetConfig(backbone="resnet50", weights=None))
    return model, profile_model(model, img_size=64, nshot=1, device="cpu", warmup=0, repeats=1)


def test_profile_counts_the_official_learnable_parameters(profiled):
    model, profile = profiled
    assert profile.learnable_params == RESNET50_LEARNABLE
    assert profile.learnable_params == sum(p.numel() for p in model.hpn_learner.parameters())


def test_profile_splits_an_episode_into_learner_and_the_rest(profiled):
    """Learner FLOPs = those of the learner run on the episode's hypercorrelation; the total adds the
    backbone passes and the correlation (model.hypercorrelation), nothing else."""
    model, profile = profiled
    query, supports, masks = episode_inputs(64, 1, "cpu", seed=0)
    with torch.no_grad(), FlopCounterMode(display=False) as rest:
        levels = model.hypercorrelation(query, supports[:, 0], masks[:, 0])
    pyramid = dict(zip(sorted(model.config.pyramid, reverse=True), levels))
    with torch.no_grad(), FlopCounterMode(display=False) as learner:
        model.hpn_learner(pyramid)
    assert profile.gflops > 0
    assert profile.gflops * 1e9 == pytest.approx(learner.get_total_flops(), rel=1e-9)
    assert profile.gflops_total * 1e9 == pytest.approx(learner.get_total_flops() + rest.get_total_flops(), rel=1e-9)
    assert (profile.img_size, profile.nshot, profile.device) == (64, 1, "cpu")
    assert profile.time_ms > 0 and profile.time_ms_iqr >= 0
    weights = sum(t.numel() * t.element_size() for t in (*model.parameters(), *model.buffers()))
    assert profile.memory_gb * 1e9 > weights
    assert model.training, "profile_model leaves the model in the mode it found it in"
