"""4D convolutions over correlation tensors (HSNet paper, Sec. 4.4 and Appendix A; Table 4).

A 4D correlation tensor has the layout ``(B, C, Hq, Wq, Hs, Ws)``: channels, then the query's two
spatial dims, then the support's. Strides apply to the support dims only (the query resolution is
kept, Sec. 4.2). Three kernels are provided, all with the same kernel size / stride interface:

* :class:`CenterPivotConv4d` -- the paper's kernel (Eq. 4-5): a k x k kernel over the support dims at
  every query position plus a k x k kernel over the query dims at every support position.
* :class:`Conv4d` -- the full k^4 kernel of NC-Net (Rocco et al. 2018), the "original 4D kernel".
* :class:`SeparableConv4d` -- a spatially separable 4D kernel in the style of VCN (Yang & Ramanan
  2019): a 2D conv over the support dims, batch norm and ReLU, then a 2D conv over the query dims and
  batch norm, applied one after the other.

The support-dims convolution runs as a 3D convolution over a view of the 6D tensor with the query dims
flattened into one depth axis, so the large (not yet squeezed) input is never copied into another layout.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def _out_size(size: int, stride: int) -> int:
    """Support positions left after a stride-s pass with 'same' padding: ceil(size / s)."""
    return math.ceil(size / stride)


def conv_over_support(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, stride: int) -> torch.Tensor:
    """2D conv of ``weight`` (O, C, k, k) over the support dims at every query position."""
    B, C, Hq, Wq, Hs, Ws = x.shape
    k = weight.shape[-1]
    y = F.conv3d(x.reshape(B, C, Hq * Wq, Hs, Ws), weight.unsqueeze(2), bias,
                 stride=(1, stride, stride), padding=(0, k // 2, k // 2))  # (B, O, Hq*Wq, Hs', Ws')
    return y.view(B, -1, Hq, Wq, y.shape[-2], y.shape[-1])


def conv_over_query(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """2D conv of ``weight`` (O, C, k, k) over the query dims (stride 1) at every support position.

    The support positions go to the batch axis (a copy, but of an input that is already subsampled on
    its support dims wherever this is used on a large tensor).
    """
    B, C, Hq, Wq, Hs, Ws = x.shape
    k = weight.shape[-1]
    planes = x.permute(0, 4, 5, 1, 2, 3).reshape(B * Hs * Ws, C, Hq, Wq)
    y = F.conv2d(planes, weight, bias, padding=k // 2)  # (B*Hs*Ws, O, Hq, Wq)
    return y.view(B, Hs, Ws, -1, Hq, Wq).permute(0, 3, 4, 5, 1, 2)


class CenterPivotConv4d(nn.Module):
    """Center-pivot 4D convolution (Eq. 5): the sum of two 2D convolutions on the pivot planes.

    ``conv1`` slides over the query dims at every (subsampled) support position, ``conv2`` over the
    support dims with stride ``stride`` at every query position. With ``stride > 1`` the input of
    ``conv1`` is first subsampled on the support dims at 0, s, 2s, ... so that both branches give
    ceil(H / s) support positions.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1, bias: bool = True):
        super().__init__()
        self.stride = stride
        self.conv1 = nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2, bias=bias)
        self.conv2 = nn.Conv2d(in_channels, out_channels, kernel_size, stride=stride,
                               padding=kernel_size // 2, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, Hq, Wq, Hs, Ws)
        s = self.stride
        pivot_support = x[..., ::s, ::s] if s > 1 else x  # (B, C, Hq, Wq, Hs', Ws')
        out_query = conv_over_query(pivot_support, self.conv1.weight, self.conv1.bias)
        out_support = conv_over_support(x, self.conv2.weight, self.conv2.bias, s)
        return out_support + out_query  # (B, O, Hq, Wq, Hs', Ws'), contiguous like out_support


class Conv4d(nn.Module):
    """Full 4D convolution with a k^4 kernel (NC-Net), support stride ``stride``, 'same' padding.

    Computed as a sum over the k query-row offsets of 3D convolutions over (Wq, Hs, Ws).
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1, bias: bool = True):
        super().__init__()
        self.stride = stride
        self.kernel_size = kernel_size
        k = kernel_size
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels, k, k, k, k))
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None
        nn.init.kaiming_uniform_(self.weight.view(out_channels, in_channels, -1), a=math.sqrt(5))
        if self.bias is not None:
            bound = 1 / math.sqrt(in_channels * k ** 4)
            nn.init.uniform_(self.bias, -bound, bound)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, Hq, Wq, Hs, Ws)
        B, C, Hq, Wq, Hs, Ws = x.shape
        k, p, s = self.kernel_size, self.kernel_size // 2, self.stride
        rows = F.pad(x.permute(0, 2, 1, 3, 4, 5), (0, 0, 0, 0, 0, 0, 0, 0, p, p))  # (B, Hq+2p, C, Wq, Hs, Ws)
        out = None
        for dy in range(k):
            window = rows[:, dy:dy + Hq].reshape(B * Hq, C, Wq, Hs, Ws)
            y = F.conv3d(window, self.weight[:, :, dy], stride=(1, s, s), padding=p)  # (B*Hq, O, Wq, Hs', Ws')
            out = y if out is None else out + y
        out = out.view(B, Hq, -1, Wq, out.shape[-2], out.shape[-1]).permute(0, 2, 1, 3, 4, 5)
        if self.bias is not None:
            out = out + self.bias.view(1, -1, 1, 1, 1, 1)
        return out.contiguous()  # (B, O, Hq, Wq, Hs', Ws')


class SeparableConv4d(nn.Module):
    """Spatially separable 4D convolution (VCN style): support-dims conv -> BN -> ReLU -> query-dims conv -> BN."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1, bias: bool = True):
        super().__init__()
        self.stride = stride
        self.conv_support = nn.Conv2d(in_channels, out_channels, kernel_size, stride=stride,
                                      padding=kernel_size // 2, bias=bias)
        self.norm_support = nn.BatchNorm1d(out_channels)
        self.conv_query = nn.Conv2d(out_channels, out_channels, kernel_size, padding=kernel_size // 2, bias=bias)
        self.norm_query = nn.BatchNorm1d(out_channels)

    @staticmethod
    def _norm(norm: nn.BatchNorm1d, x: torch.Tensor) -> torch.Tensor:
        return norm(x.reshape(x.shape[0], x.shape[1], -1)).view_as(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, Hq, Wq, Hs, Ws)
        x = conv_over_support(x, self.conv_support.weight, self.conv_support.bias, self.stride)
        x = F.relu(self._norm(self.norm_support, x))
        x = conv_over_query(x, self.conv_query.weight, self.conv_query.bias)
        return self._norm(self.norm_query, x)  # (B, O, Hq, Wq, Hs', Ws')


KERNELS: dict[str, type[nn.Module]] = {
    "center_pivot": CenterPivotConv4d,
    "original": Conv4d,
    "separable": SeparableConv4d,
}
