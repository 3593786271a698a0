"""Frozen torchvision backbones and their feature taps (HSNet paper, Sec. 4.1 and Appendix B).

* VGG16: the outputs of ``features[17, 19, 21]`` (conv4_1..3), ``[24, 26, 28]`` (conv5_1..3), taken
  before the following ReLU, and ``features[30]`` (pool5).
* ResNet50/101: one tap per bottleneck of layer2, layer3 and layer4, after the residual addition and
  before the block's final ReLU.

Taps are returned in backbone order (shallow first), grouped into the three pyramid levels
(finest first): VGG16 3/3/1 taps, ResNet50 4/6/3, ResNet101 4/23/3.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
import torchvision
from torch import nn
from torchvision.models import resnet as tv_resnet

VGG_TAPS = (17, 19, 21, 24, 26, 28, 30)


@dataclass(frozen=True)
class BackboneSpec:
    build: Callable[..., nn.Module]
    imagenet_weights: torchvision.models.WeightsEnum
    level_taps: tuple[int, int, int]  # taps per pyramid level, finest (p=1) first


BACKBONES: dict[str, BackboneSpec] = {
    "vgg16": BackboneSpec(torchvision.models.vgg16, torchvision.models.VGG16_Weights.IMAGENET1K_V1, (3, 3, 1)),
    "resnet50": BackboneSpec(torchvision.models.resnet50, torchvision.models.ResNet50_Weights.IMAGENET1K_V1, (4, 6, 3)),
    "resnet101": BackboneSpec(torchvision.models.resnet101, torchvision.models.ResNet101_Weights.IMAGENET1K_V1,
                              (4, 23, 3)),
}

# Heads of the torchvision models that HSNet never uses; they are dropped from the module and from
# released checkpoints.
UNUSED_HEADS = ("fc", "classifier")


def backbone_spec(name: str) -> BackboneSpec:
    if name not in BACKBONES:
        raise ValueError(f"unknown backbone {name!r}; choose one of {sorted(BACKBONES)}")
    return BACKBONES[name]


def build_backbone(name: str, weights: str | os.PathLike | None) -> nn.Module:
    """The torchvision model without its classification head, frozen, with parameter names kept.

    ``weights``: "imagenet" (torchvision's weights API, cached download), ``None`` (random
    initialisation) or the path of a torchvision state-dict file for this backbone.
    """
    spec = backbone_spec(name)
    net = spec.build(weights=None)
    for head in UNUSED_HEADS:
        if hasattr(net, head):
            delattr(net, head)
    if weights is not None:
        net.load_state_dict(_backbone_state_dict(name, spec, weights), strict=True)
    for module in net.modules():  # taps are read before the ReLUs, which must not overwrite them
        if isinstance(module, nn.ReLU):
            module.inplace = False
    net.requires_grad_(False)
    return net.eval()


def _backbone_state_dict(name: str, spec: BackboneSpec, weights: str | os.PathLike) -> dict[str, torch.Tensor]:
    if isinstance(weights, str) and weights == "imagenet":
        try:
            state = spec.imagenet_weights.get_state_dict(progress=True)
        except Exception as err:  # offline, proxy, corrupt cache: all end here
            cache = Path(torch.hub.get_dir()) / "checkpoints"
            filename = Path(spec.imagenet_weights.url).name
            raise RuntimeError(
                f"could not get the ImageNet weights of {name} through torchvision ({type(err).__name__}: {err}). "
                f"Put torchvision's file {filename} into {cache} (it is used from there without a download), "
                f"or pass weights='/path/to/{filename}', or weights=None for a randomly initialised backbone."
            ) from err
    else:
        path = Path(weights)
        if not path.is_file():
            raise FileNotFoundError(f"backbone weights file {path} does not exist (weights= takes 'imagenet', "
                                    f"None or the path of a torchvision state dict for {name})")
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:
            raise ValueError(f"cannot read backbone weights {path}: {err}") from err
        if not isinstance(state, dict):
            raise ValueError(f"backbone weights {path} hold a {type(state).__name__}, not a state dict")
    state = {k: v for k, v in state.items() if k.split(".")[0] not in UNUSED_HEADS}
    return state


def extract_taps(name: str, net: nn.Module, img: torch.Tensor) -> list[torch.Tensor]:
    """All feature taps of ``img`` (B, 3, H, W), shallow first."""
    if name == "vgg16":
        return _vgg_taps(net, img)
    return _resnet_taps(net, img)


def _vgg_taps(net: nn.Module, x: torch.Tensor) -> list[torch.Tensor]:
    taps = []
    for idx, layer in enumerate(net.features[: VGG_TAPS[-1] + 1]):
        x = layer(x)
        if idx in VGG_TAPS:
            taps.append(x)
    return taps


def _bottleneck_pre_relu(block: tv_resnet.Bottleneck, x: torch.Tensor) -> torch.Tensor:
    out = block.relu(block.bn1(block.conv1(x)))
    out = block.relu(block.bn2(block.conv2(out)))
    out = block.bn3(block.conv3(out))
    identity = block.downsample(x) if block.downsample is not None else x
    return out + identity


def _resnet_taps(net: nn.Module, x: torch.Tensor) -> list[torch.Tensor]:
    x = net.maxpool(net.relu(net.bn1(net.conv1(x))))
    x = net.layer1(x)
    taps = []
    for stage in (net.layer2, net.layer3, net.layer4):
        for block in stage:
            tap = _bottleneck_pre_relu(block, x)
            taps.append(tap)
            x = torch.relu(tap)
    return taps
