"""The paper's frozen torchvision backbones and their taps (HSNet Sec. 4.1, Appendix B).

* VGG16: the outputs of ``features[17, 19, 21]`` (conv4_1..3), ``[24, 26, 28]`` (conv5_1..3), taken
  before the following ReLU, and ``features[30]`` (pool5): 3/3/1 taps at strides 8/16/32.
* ResNet50/101: one tap per bottleneck of layer2, layer3 and layer4, after the residual addition and
  before the block's final ReLU: 4/6/3 and 4/23/3 taps at strides 8/16/32.

Weights: "imagenet" (torchvision's weights enum, cached download), a torchvision state-dict file, or None.
"""
from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Callable

import torch
import torchvision
from torch import nn
from torchvision.models import resnet as tv_resnet

from hsnetlib.backbones import (BackboneSpec, drop_heads, freeze, register_backbone, weights_file,
                                without_heads)

VGG_TAPS = (17, 19, 21, 24, 26, 28, 30)
HEADS = ("fc", "classifier")  # classification heads HSNet never uses
PRETRAINED = ("imagenet",)


def build(name: str, constructor: Callable[..., nn.Module], imagenet: torchvision.models.WeightsEnum,
          weights: str | None) -> nn.Module:
    """The torchvision model without its classification head, frozen, with parameter names kept."""
    net = drop_heads(constructor(weights=None), HEADS)
    if weights is not None:
        net.load_state_dict(without_heads(state_dict(name, imagenet, weights), HEADS), strict=True)
    return freeze(net)


def state_dict(name: str, imagenet: torchvision.models.WeightsEnum, weights: str) -> dict[str, torch.Tensor]:
    if weights == "imagenet":
        try:
            return imagenet.get_state_dict(progress=True)
        except Exception as err:  # offline, proxy, corrupt cache: all end here
            cache = Path(torch.hub.get_dir()) / "checkpoints"
            filename = Path(imagenet.url).name
            raise RuntimeError(
                f"could not get the ImageNet weights of {name} through torchvision ({type(err).__name__}: {err}). "
                f"Put torchvision's file {filename} into {cache} (it is used from there without a download), "
                f"or pass weights='/path/to/{filename}', or weights=None for a randomly initialised backbone."
            ) from err
    path = weights_file(name, weights, PRETRAINED)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise ValueError(f"cannot read backbone weights {path}: {err}") from err
    if not isinstance(state, dict):
        raise ValueError(f"backbone weights {path} hold a {type(state).__name__}, not a state dict")
    return state


def vgg_taps(net: nn.Module, x: torch.Tensor) -> list[torch.Tensor]:
    taps = []
    for idx, layer in enumerate(net.features[: VGG_TAPS[-1] + 1]):
        x = layer(x)
        if idx in VGG_TAPS:
            taps.append(x)
    return taps


def bottleneck_pre_relu(block: tv_resnet.Bottleneck, x: torch.Tensor) -> torch.Tensor:
    out = block.relu(block.bn1(block.conv1(x)))
    out = block.relu(block.bn2(block.conv2(out)))
    out = block.bn3(block.conv3(out))
    identity = block.downsample(x) if block.downsample is not None else x
    return out + identity


def resnet_taps(net: nn.Module, x: torch.Tensor) -> list[torch.Tensor]:
    x = net.maxpool(net.relu(net.bn1(net.conv1(x))))
    x = net.layer1(x)
    taps = []
    for stage in (net.layer2, net.layer3, net.layer4):
        for block in stage:
            tap = bottleneck_pre_relu(block, x)
            taps.append(tap)
            x = torch.relu(tap)
    return taps


def torchvision_backbone(name: str, imagenet: torchvision.models.WeightsEnum, taps, level_taps: tuple[int, int, int],
                         level_dims: tuple[int, int, int]) -> BackboneSpec:
    return BackboneSpec(name=name, source="torchvision", build=partial(build, name, getattr(torchvision.models, name),
                                                                       imagenet),
                        taps=taps, level_taps=level_taps, level_strides=(8, 16, 32), level_dims=level_dims,
                        heads=HEADS, pretrained=PRETRAINED)


register_backbone(torchvision_backbone("vgg16", torchvision.models.VGG16_Weights.IMAGENET1K_V1, vgg_taps,
                                       (3, 3, 1), (512, 512, 512)))
register_backbone(torchvision_backbone("resnet50", torchvision.models.ResNet50_Weights.IMAGENET1K_V1, resnet_taps,
                                       (4, 6, 3), (512, 1024, 2048)))
register_backbone(torchvision_backbone("resnet101", torchvision.models.ResNet101_Weights.IMAGENET1K_V1, resnet_taps,
                                       (4, 23, 3), (512, 1024, 2048)))
