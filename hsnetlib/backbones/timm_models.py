"""Backbones from timm: the Swin-B of DCAMA, ConvNeXt-B and the DINOv2 ViTs of Matcher / FoundationFSS.

Built with ``timm.create_model(arch, pretrained=False, num_classes=0)``; the taps are read by walking the
model's own modules (the tests check them against timm's ``forward_intermediates`` and forward hooks).

* Hierarchical models (Swin, ConvNeXt): one tap per block of stages 2-4, at strides 8/16/32 like ResNet's
  layer2-4. Swin-B (2/2/18/2 blocks): 2/18/2 taps, channels-last outputs turned to (B, C, H, W); ConvNeXt-B
  (3/3/27/3 blocks): 3/27/3 taps.
* Plain ViTs (DINOv2 ViT-S/14, ViT-B/14, ViT-L/14): every block has stride 14, so a pyramid level is a group
  of blocks: the blocks in thirds, in depth order (ViT-S and ViT-B, 12 blocks: 4/4/4; ViT-L, 24 blocks: 8/8/8).
  The levels then run from shallow to deep features as a CNN's do from fine to coarse, and since every level
  has the same feature size each costs the same, so each gets an equal share of the blocks. A tap is a block's
  patch tokens (class and register tokens removed) reshaped to (B, C, H/14, W/14); the position embedding is
  interpolated to the input size (``dynamic_img_size``), which must be a multiple of 14 (392 or 420 px at the
  paper's scale). With one stride for all levels, every level's squeezing block has support strides 2/2/2.

Weights: one of timm's pretrained tags of the architecture (``timm.list_pretrained``; downloaded by timm's
``load_pretrained`` where there is a network), a local file (``timm.models.load_state_dict``: .safetensors or
.pth, timm's or the authors' layout through timm's checkpoint filter), or None (random, frozen).
"""
from __future__ import annotations

from functools import partial
from typing import Any, Callable

import timm
import torch
from timm.models import convnext, swin_transformer, vision_transformer
from torch import nn

from hsnetlib.backbones import (BackboneSpec, drop_heads, freeze, register_backbone, weights_file,
                                without_heads)


def pretrained_tags(arch: str) -> tuple[str, ...]:
    """timm's pretrained tags of ``arch`` ("lvd142m", "ms_in22k", ...)."""
    return tuple(name.split(".", 1)[1] for name in timm.list_pretrained(arch))


def weights_url(arch: str, tag: str) -> str:
    """Where timm downloads the weights of ``arch.tag`` from (the Hugging Face hub, else the authors' URL)."""
    cfg = timm.models.get_pretrained_cfg(f"{arch}.{tag}")
    return f"https://huggingface.co/{cfg.hf_hub_id}/resolve/main/model.safetensors" if cfg.hf_hub_id else cfg.url


def build(name: str, arch: str, heads: tuple[str, ...], filter_fn: Callable, model_kwargs: dict[str, Any],
          weights: str | None) -> nn.Module:
    tags = pretrained_tags(arch)
    net = timm.create_model(arch, pretrained=False, num_classes=0, **model_kwargs)
    if weights in tags:
        cfg = timm.models.get_pretrained_cfg(f"{arch}.{weights}").to_dict()
        try:
            timm.models.load_pretrained(net, pretrained_cfg=cfg, num_classes=0, filter_fn=filter_fn, strict=True)
        except Exception as err:  # offline, no Hugging Face hub, corrupt cache: all end here
            url = weights_url(arch, weights)
            raise RuntimeError(
                f"could not get the {weights!r} weights of {name} through timm ({type(err).__name__}: {err}). "
                f"Download {url} where there is a network, put the file anywhere on this machine and pass "
                f"weights='/path/to/{url.rsplit('/', 1)[-1]}' (timm reads it from there), or weights=None for a "
                "randomly initialised backbone.") from err
        drop_heads(net, heads)
    elif weights is not None:
        path = weights_file(name, weights, tags)
        try:
            state = timm.models.load_state_dict(str(path), device="cpu")
        except Exception as err:
            raise ValueError(f"cannot read backbone weights {path}: {err}") from err
        state = without_heads(filter_fn(state, net), heads)
        drop_heads(net, heads)
        try:
            net.load_state_dict(state, strict=True)
        except RuntimeError as err:
            raise ValueError(f"backbone weights {path} do not fit {name} ({arch}): {err}") from err
    else:
        drop_heads(net, heads)
    return freeze(net)


def hierarchical_taps(net: nn.Module, img: torch.Tensor, *, stem: str, first_stage: int,
                      channels_last: bool) -> list[torch.Tensor]:
    """One tap per block of the stages from ``first_stage`` (0-based) on: [(B, C, h, w), ...]."""
    stages = net.layers if hasattr(net, "layers") else net.stages
    x = getattr(net, stem)(img)
    taps = []
    for i, stage in enumerate(stages):
        x = stage.downsample(x)
        for block in stage.blocks:
            x = block(x)
            if i >= first_stage:
                taps.append(x.permute(0, 3, 1, 2) if channels_last else x)  # (B, C, h, w)
    return taps


def vit_taps(net: nn.Module, img: torch.Tensor) -> list[torch.Tensor]:
    """Every block's patch tokens (prefix tokens removed) as (B, C, H/p, W/p)."""
    B = img.shape[0]
    h, w = net.patch_embed.dynamic_feat_size(img.shape[-2:])
    x = net.norm_pre(net.patch_drop(net._pos_embed(net.patch_embed(img))))  # (B, prefix + h*w, C)
    taps = []
    for block in net.blocks:
        x = block(x)
        taps.append(x[:, net.num_prefix_tokens:].reshape(B, h, w, -1).permute(0, 3, 1, 2))
    return taps


def timm_backbone(name: str, *, taps: Callable, level_taps: tuple[int, int, int], level_strides: tuple[int, int, int],
                  level_dims: tuple[int, int, int], heads: tuple[str, ...], filter_fn: Callable, arch: str | None = None,
                  input_multiple: int = 1, **model_kwargs: Any) -> BackboneSpec:
    """A spec for timm's ``arch`` (default: ``name``); ``model_kwargs`` go to ``timm.create_model``."""
    arch = arch or name
    cfg = timm.models.get_pretrained_cfg(arch)
    return BackboneSpec(name=name, source="timm", build=partial(build, name, arch, heads, filter_fn, model_kwargs),
                        taps=taps, level_taps=level_taps, level_strides=level_strides, level_dims=level_dims,
                        heads=heads, pretrained=pretrained_tags(arch), mean=tuple(cfg.mean), std=tuple(cfg.std),
                        input_multiple=input_multiple)


SWIN_HEADS = ("norm", "head")           # final LayerNorm and the (pooling) classifier
CONVNEXT_HEADS = ("norm_pre", "head")   # the head holds ConvNeXt's final norm and classifier
VIT_HEADS = ("norm", "fc_norm", "head_drop", "head")

register_backbone(timm_backbone(
    "swin_base_patch4_window12_384", level_taps=(2, 18, 2), level_strides=(8, 16, 32), level_dims=(256, 512, 1024),
    taps=partial(hierarchical_taps, stem="patch_embed", first_stage=1, channels_last=True), heads=SWIN_HEADS,
    filter_fn=swin_transformer.checkpoint_filter_fn,
    strict_img_size=False))  # any input size; the shifted-window masks follow it
register_backbone(timm_backbone(
    "convnext_base", level_taps=(3, 27, 3), level_strides=(8, 16, 32), level_dims=(256, 512, 1024),
    taps=partial(hierarchical_taps, stem="stem", first_stage=1, channels_last=False), heads=CONVNEXT_HEADS,
    filter_fn=convnext.checkpoint_filter_fn))
for _name, _levels, _dim in (("vit_small_patch14_dinov2", (4, 4, 4), 384), ("vit_base_patch14_dinov2", (4, 4, 4), 768),
                             ("vit_large_patch14_dinov2", (8, 8, 8), 1024)):
    register_backbone(timm_backbone(
        _name, level_taps=_levels, level_strides=(14, 14, 14), level_dims=(_dim,) * 3, taps=vit_taps,
        heads=VIT_HEADS, filter_fn=vision_transformer.checkpoint_filter_fn, input_multiple=14,
        dynamic_img_size=True))  # position embedding interpolated to the input's token grid
