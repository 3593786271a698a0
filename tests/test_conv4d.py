"""The three 4D kernels of hsnetlib.conv4d against brute-force 4D convolutions (paper Eq. 4-5, Table 4).

The reference is the textbook definition: zero-pad all four spatial dims by k//2, then for every one of
the k^4 kernel offsets add ``W[:, :, a, b, c, d] @ x[..., iq+a, jq+b, s*is+c, s*js+d]``. The center-pivot
kernel is that 4D convolution with a kernel that is zero off its two pivot planes.
"""
from __future__ import annotations

import itertools

import pytest
import torch
import torch.nn.functional as F

from hsnetlib.conv4d import CenterPivotConv4d, Conv4d, SeparableConv4d

# (B, C, Hq, Wq, Hs, Ws): non-square query and support grids, odd and even sizes.
SHAPE = (2, 3, 5, 4, 7, 6)


@torch.no_grad()
def brute_force_conv4d(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, stride: int) -> torch.Tensor:
    """'Same'-padded 4D convolution, support stride ``stride``, query stride 1, by explicit kernel offsets.

    x (B, C, Hq, Wq, Hs, Ws), weight (O, C, k, k, k, k) -> (B, O, Hq, Wq, ceil(Hs/s), ceil(Ws/s)).
    """
    B, C, Hq, Wq, Hs, Ws = x.shape
    k = weight.shape[-1]
    p = k // 2
    Ho, Wo = -(-Hs // stride), -(-Ws // stride)
    xp = F.pad(x, (p, p) * 4)  # pads Ws, Hs, Wq, Hq
    out = torch.zeros(B, weight.shape[0], Hq, Wq, Ho, Wo, dtype=x.dtype)
    for a, b, c, d in itertools.product(range(k), repeat=4):
        patch = xp[:, :, a:a + Hq, b:b + Wq,
                   c:c + stride * (Ho - 1) + 1:stride, d:d + stride * (Wo - 1) + 1:stride]
        w = weight[:, :, a, b, c, d].reshape(1, -1, C, 1, 1, 1, 1)  # (1, O, C, 1, 1, 1, 1)
        out += (w * patch.unsqueeze(1)).sum(dim=2)
    if bias is not None:
        out += bias.view(1, -1, 1, 1, 1, 1)
    return out


@torch.no_grad()
def center_pivot_kernel(cp: CenterPivotConv4d) -> torch.Tensor:
    """The k^4 kernel of Eq. 4-5: conv1's k x k weights on the query plane through the support center,
    conv2's on the support plane through the query center, zero everywhere else."""
    w1, w2 = cp.conv1.weight, cp.conv2.weight  # (O, C, k, k) each
    O, C, k, _ = w1.shape
    p = k // 2
    full = torch.zeros(O, C, k, k, k, k, dtype=w1.dtype)
    full[:, :, :, :, p, p] += w1
    full[:, :, p, p, :, :] += w2
    return full


def random_input(seed: int = 0) -> torch.Tensor:
    return torch.randn(*SHAPE, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("kernel_size", [3, 5])
@pytest.mark.parametrize("stride", [1, 2, 4])
def test_center_pivot_equals_brute_force_with_pivot_kernel(kernel_size, stride):
    torch.manual_seed(kernel_size * 10 + stride)
    cp = CenterPivotConv4d(3, 4, kernel_size, stride)
    x = random_input()
    expected = brute_force_conv4d(x, center_pivot_kernel(cp), cp.conv1.bias + cp.conv2.bias, stride)
    out = cp(x)
    assert out.shape == (2, 4, 5, 4, -(-7 // stride), -(-6 // stride))
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)


def test_center_pivot_kernel_is_not_a_full_kernel():
    """Sanity of the reference: the pivot kernel differs from a dense kernel, and the brute force sees it."""
    torch.manual_seed(0)
    cp = CenterPivotConv4d(3, 4, 3, 1)
    x = random_input()
    dense = center_pivot_kernel(cp) + 0.1 * torch.randn(4, 3, 3, 3, 3, 3)
    off_pivot = brute_force_conv4d(x, dense, cp.conv1.bias + cp.conv2.bias, 1)
    assert (cp(x) - off_pivot).abs().max() > 1e-3


@pytest.mark.parametrize("kernel_size", [3, 5])
@pytest.mark.parametrize("stride", [1, 2, 4])
def test_original_conv4d_equals_brute_force(kernel_size, stride):
    torch.manual_seed(kernel_size * 10 + stride)
    conv = Conv4d(3, 4, kernel_size, stride)
    x = random_input(1)
    expected = brute_force_conv4d(x, conv.weight.detach(), conv.bias.detach(), stride)
    torch.testing.assert_close(conv(x), expected, rtol=1e-5, atol=1e-5)


def test_original_conv4d_without_bias():
    torch.manual_seed(0)
    conv = Conv4d(3, 2, 3, 2, bias=False)
    x = random_input(2)
    torch.testing.assert_close(conv(x), brute_force_conv4d(x, conv.weight.detach(), None, 2), rtol=1e-5, atol=1e-5)


def batch_norm_reference(x: torch.Tensor, bn: torch.nn.BatchNorm1d, training: bool) -> torch.Tensor:
    """Per-channel normalisation over every other dim of a (B, C, ...) tensor."""
    dims = [0] + list(range(2, x.dim()))
    shape = (1, -1) + (1,) * (x.dim() - 2)
    if training:
        mean, var = x.mean(dims), x.var(dims, unbiased=False)
    else:
        mean, var = bn.running_mean, bn.running_var
    return (x - mean.view(shape)) / torch.sqrt(var.view(shape) + bn.eps) * bn.weight.view(shape) + bn.bias.view(shape)


def separable_reference(sep: SeparableConv4d, x: torch.Tensor, training: bool) -> torch.Tensor:
    """support conv -> BN -> ReLU -> query conv -> BN, with each 2D conv written as a 4D kernel on one plane."""
    O, C, k, _ = sep.conv_support.weight.shape
    p = k // 2
    w_support = torch.zeros(O, C, k, k, k, k, dtype=x.dtype)
    w_support[:, :, p, p] = sep.conv_support.weight
    w_query = torch.zeros(O, O, k, k, k, k, dtype=x.dtype)
    w_query[:, :, :, :, p, p] = sep.conv_query.weight
    y = brute_force_conv4d(x, w_support, sep.conv_support.bias, sep.stride)
    y = torch.relu(batch_norm_reference(y, sep.norm_support, training))
    y = brute_force_conv4d(y, w_query, sep.conv_query.bias, 1)
    return batch_norm_reference(y, sep.norm_query, training)


@pytest.mark.parametrize("kernel_size", [3, 5])
@pytest.mark.parametrize("stride", [1, 2, 4])
@pytest.mark.parametrize("training", [True, False])
def test_separable_conv4d_equals_its_definition(kernel_size, stride, training):
    torch.manual_seed(kernel_size * 10 + stride)
    sep = SeparableConv4d(3, 4, kernel_size, stride)
    for bn in (sep.norm_support, sep.norm_query):  # non-trivial affine parameters and running statistics
        bn.weight.data.uniform_(0.5, 1.5)
        bn.bias.data.normal_()
        bn.running_mean.normal_()
        bn.running_var.uniform_(0.5, 2.0)
    sep.train(training)
    x = random_input(3)
    with torch.no_grad():
        expected = separable_reference(sep, x, training)
        out = sep(x)
    assert out.shape == (2, 4, 5, 4, -(-7 // stride), -(-6 // stride))
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kernel_cls", [CenterPivotConv4d, Conv4d, SeparableConv4d])
def test_kernels_backpropagate_to_input_and_weights(kernel_cls):
    torch.manual_seed(0)
    conv = kernel_cls(2, 3, 3, 2)
    x = torch.randn(1, 2, 4, 5, 6, 3, requires_grad=True)
    conv(x).square().sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in conv.parameters())
