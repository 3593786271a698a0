"""Frozen feature extractors of HSNet (paper Sec. 4.1, Appendix B) and beyond: a registry, one entry per backbone.

A :class:`BackboneSpec` says how to build a backbone (frozen, heads dropped), which features it taps, how those
taps group into the three pyramid levels (finest first) and at which feature stride each level lies; the squeeze
schedule of :mod:`hsnetlib.model` is derived from those strides. Registered here:

* :mod:`hsnetlib.backbones.torchvision_models`: the paper's VGG16, ResNet50 and ResNet101 (the released checkpoints
  and the golden tests depend on them);
* :mod:`hsnetlib.backbones.timm_models`: Swin-B, ConvNeXt-B and the DINOv2 ViT-S/B/L of the work built on HSNet.

A new backbone is one ``register_backbone(BackboneSpec(...))`` call, from inside or outside the package.
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from hsnetlib.data import IMAGENET_MEAN, IMAGENET_STD
from hsnetlib.registry import Registry

Taps = Callable[[nn.Module, torch.Tensor], "list[torch.Tensor]"]


@dataclass(frozen=True, kw_only=True)
class BackboneSpec:
    """One registered backbone. The datasets deliver ImageNet-normalised images; a backbone trained with other
    statistics (``mean``/``std``) gets its input re-normalised in :meth:`extract_taps`."""
    name: str
    source: str                              # "torchvision" | "timm" (where build takes it from)
    build: Callable[[str | None], nn.Module]  # weights -> the frozen module without its heads
    taps: Taps                               # (net, img (B, 3, H, W)) -> taps [(B, C, h, w), ...], shallow first
    level_taps: tuple[int, int, int]         # taps per pyramid level, finest (p=1) first
    level_strides: tuple[int, int, int]      # feature stride (input px per feature px) of each level
    level_dims: tuple[int, int, int]         # feature channels C of the taps of each level
    heads: tuple[str, ...]                   # top-level modules HSNet never uses: dropped from the module and checkpoints
    pretrained: tuple[str, ...]              # named weights build() accepts (besides a file path and None)
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    input_multiple: int = 1                  # image height and width must be multiples of this (a ViT's patch size)

    def __post_init__(self) -> None:
        if len(self.level_taps) != 3 or len(self.level_strides) != 3 or len(self.level_dims) != 3:
            raise ValueError(f"backbone {self.name}: level_taps, level_strides and level_dims give the 3 pyramid "
                             "levels, finest first")
        if list(self.level_strides) != sorted(self.level_strides):
            raise ValueError(f"backbone {self.name}: level_strides {self.level_strides} must not decrease from the "
                             "finest level to the coarsest")

    @property
    def num_taps(self) -> int:
        return sum(self.level_taps)

    def valid_sizes(self, size: int) -> tuple[int, int]:
        """The valid image sizes (multiples of ``input_multiple``) nearest to ``size``: (below or at, at or above)."""
        m = self.input_multiple
        return max(m, size // m * m), -(-size // m) * m

    def nearest_size(self, size: int) -> int:
        """The valid image size nearest to ``size`` (the larger one on a tie)."""
        return min(self.valid_sizes(size), key=lambda s: (abs(s - size), -s))

    def check_input_size(self, height: int, width: int) -> None:
        m = self.input_multiple
        if height % m or width % m:
            low, high = self.valid_sizes(height if height % m else width)
            raise ValueError(f"backbone {self.name} takes image sizes that are multiples of {m} (its patch size), "
                             f"got {height}x{width}; the nearest valid sizes are {low} and {high}")

    def extract_taps(self, net: nn.Module, img: torch.Tensor) -> list[torch.Tensor]:
        """All taps of ``img`` (B, 3, H, W), ImageNet-normalised: [(B, C, h, w), ...], shallow first."""
        self.check_input_size(*img.shape[-2:])
        if (self.mean, self.std) != (IMAGENET_MEAN, IMAGENET_STD):
            view = dict(device=img.device, dtype=img.dtype)
            img = img * torch.tensor(IMAGENET_STD, **view).view(3, 1, 1) + torch.tensor(IMAGENET_MEAN, **view).view(3, 1, 1)
            img = (img - torch.tensor(self.mean, **view).view(3, 1, 1)) / torch.tensor(self.std, **view).view(3, 1, 1)
        taps = self.taps(net, img)
        if len(taps) != self.num_taps:
            raise RuntimeError(f"backbone {self.name} gave {len(taps)} taps, its spec declares {self.num_taps}")
        return taps

    def weights_record(self, weights: str | os.PathLike | None) -> dict[str, str | None]:
        """What a checkpoint records of the backbone: its name, its weights (tag, file or None) and the file's hash."""
        path = Path(weights) if weights is not None and str(weights) not in self.pretrained else None
        return {"name": self.name, "weights": None if weights is None else str(weights),
                "sha256": file_sha256(path) if path is not None and path.is_file() else None}


_BACKBONES: Registry[BackboneSpec] = Registry("backbone")


def register_backbone(spec: BackboneSpec, *, replace: bool = False) -> BackboneSpec:
    """Add ``spec`` to the registry; a name already taken is an error unless ``replace``."""
    return _BACKBONES.register(spec.name, spec, replace=replace)


def unregister_backbone(name: str) -> None:
    """Remove a registered backbone (e.g. one a test registered)."""
    _BACKBONES.unregister(name)


def get_backbone(name: str) -> BackboneSpec:
    return _BACKBONES.get(name)


def list_backbones() -> list[str]:
    """The registered backbone names, in registration order (the paper's first)."""
    return _BACKBONES.names()


def build_backbone(name: str, weights: str | os.PathLike | None) -> nn.Module:
    """The frozen backbone ``name`` with ``weights`` (one of its named weights, a file path, or None: random)."""
    return get_backbone(name).build(None if weights is None else str(weights))


def drop_heads(net: nn.Module, heads: tuple[str, ...]) -> nn.Module:
    for head in heads:
        if hasattr(net, head):
            delattr(net, head)
    return net


def without_heads(state: dict[str, torch.Tensor], heads: tuple[str, ...]) -> dict[str, torch.Tensor]:
    return {k: v for k, v in state.items() if k.split(".")[0] not in heads}


def freeze(net: nn.Module) -> nn.Module:
    for module in net.modules():  # taps may be read before a ReLU, which must not overwrite them
        if isinstance(module, nn.ReLU):
            module.inplace = False
    net.requires_grad_(False)
    return net.eval()


def weights_file(name: str, weights: str, pretrained: tuple[str, ...]) -> Path:
    """``weights`` as the path of an existing file, or an error naming the accepted values."""
    path = Path(weights)
    if not path.is_file():
        raise FileNotFoundError(f"backbone weights {weights!r} of {name} are neither one of its named weights "
                                f"({', '.join(pretrained)}) nor an existing file (or pass None for random weights)")
    return path


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


# the registrations, the paper's backbones first
from hsnetlib.backbones import torchvision_models  # noqa: E402,F401
from hsnetlib.backbones import timm_models  # noqa: E402,F401
