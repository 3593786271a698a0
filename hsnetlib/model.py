"""Hypercorrelation Squeeze Networks (Min, Kang, Cho, ICCV 2021), as the released checkpoints expect.

* Sec. 4.1: support feature masking (Eq. 1) and multi-layer 4D correlations (Eq. 2), stacked into a
  three-level hypercorrelation pyramid -- :class:`Hypercorrelation`.
* Sec. 4.2: the 4D-convolutional pyramid encoder of squeezing and mixing blocks -- :class:`SqueezeBlock`
  stacks, top-down ``mix`` -- and Sec. 4.3 the 2D decoder: :class:`HPNLearner` (checkpoint name
  ``hpn_learner``).
* Sec. 4.4: center-pivot 4D convolutions (:mod:`hsnetlib.conv4d`).
* Sec. 4.5: K-shot voting -- :meth:`HSNet.predict_mask`.

Every ablation of Sec. 5.2 is a field of :class:`HSNetConfig` (``variant=True``) with the paper's default;
``HSNet(HSNetConfig(kernel="original"))`` builds that variant.

A model built on HSNet is a subclass of :class:`HSNetConfig` (its own ``architecture`` name and options) and one of
:class:`HSNet` that reads them, registered once with :func:`register_model`; training, checkpoints, the studies and
the result tables then build it from its config (:meth:`HSNet.from_config`) and see its options.
"""
from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ClassVar, Iterator, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from hsnetlib.backbones import build_backbone, get_backbone, list_backbones
from hsnetlib.conv4d import KERNELS
from hsnetlib.data.base import PAPER_IMG_SIZE  # noqa: F401  (re-exported: the model's published input size)
from hsnetlib.registry import Registry
from hsnetlib.utils import atomic_save, load_checkpoint

FORMAT = "hsnetlib"
FORMAT_VERSION = 1

# Squeezing blocks (Sec. 4.2): output channels of the three layers, and the support strides of the coarsest
# level's block; finer levels' strides follow from the backbone's feature strides (squeeze_strides).
SQUEEZE_CHANNELS = (16, 64, 128)
COARSEST_SQUEEZE = (2, 2, 2)
MIX_CHANNELS = 128
GROUPS = 4
PYRAMIDS = ((1, 2, 3), (2, 3), (3,))
SPARSE_SUPPORT = 0.7  # below this fraction of unmasked support positions, correlate only those
HYPERCORRELATIONS = ("full", "shallow", "deep")



def option(default: Any, *, help: str, choices: Sequence[Any] | Callable[[], Sequence[Any]] | None = None,
           paper: str | None = None, variant: bool = False) -> Any:
    """A model option: its default and, as field metadata, its help text, its admissible values (a sequence, or
    a function returning the names of a registry), the paper section it comes from and whether it is an
    ablation variant of Sec. 5.2 (what the studies, the training cache and the result tables vary)."""
    return field(default=default, metadata={"help": help, "choices": choices, "paper": paper, "variant": variant})


def option_choices(f: dataclasses.Field) -> tuple[Any, ...] | None:
    """A field's admissible values (None: any value of its type)."""
    choices = f.metadata.get("choices")
    return tuple(choices() if callable(choices) else choices) if choices is not None else None


@dataclass(kw_only=True)
class HSNetConfig:
    """The model's options, with the paper's defaults. Stored in every checkpoint the project writes.

    Every option is declared once here; its metadata (see :func:`option`) drives the validation, the command
    line flags and the variant columns of the suite and the result tables. A subclass registered with
    :func:`register_model` adds options of a model built on HSNet under its own ``architecture`` name.
    """
    architecture: ClassVar[str] = "hsnet"  # the registered model (register_model) this config builds

    backbone: str = option("resnet50", choices=list_backbones, paper="Sec. 5.1",
                           help="frozen feature extractor")
    weights: str | None = option("imagenet", help="backbone initialisation: one of the backbone's named weights "
                                                  "('imagenet' for torchvision's, a timm pretrained tag such as "
                                                  "'lvd142m' for timm's), None (random) or a weights file path")
    hypercorrelation: str = option("full", choices=HYPERCORRELATIONS, paper="Fig. 6, Table A3", variant=True,
                                   help="which backbone layers are correlated")
    pyramid: tuple[int, ...] = option((1, 2, 3), choices=PYRAMIDS, paper="Fig. 7, Table A4", variant=True,
                                      help="pyramid levels used, 1 = finest")
    kernel: str = option("center_pivot", choices=lambda: sorted(KERNELS), paper="Table 4", variant=True,
                         help="4D convolution kernel")
    block_layers: int = option(3, choices=(1, 2, 3, 4), paper="Fig. 9", variant=True,
                               help="(4D conv, GroupNorm, ReLU) layers per building block")
    support_masking: bool = option(True, choices=(True, False), paper="Eq. 1, Table 1 (dagger: False)", variant=True,
                                   help="mask the support features with the support mask")
    finetune_backbone: bool = option(False, choices=(True, False), paper="Fig. 10", variant=True,
                                     help="train the backbone too (the trainer gives it its own learning rate)")

    def __post_init__(self) -> None:
        get_backbone(self.backbone)  # an unknown name's error lists the registered ones
        if self.weights is not None and not isinstance(self.weights, (str, os.PathLike)):
            raise ValueError(f"weights must be 'imagenet', None or a file path, got {self.weights!r}")
        if self.weights is not None:
            self.weights = str(self.weights)
        if isinstance(self.pyramid, (list, tuple, set)):  # a set of levels: one order, one cache key
            self.pyramid = tuple(sorted(p if isinstance(p, bool) else int(p) for p in self.pyramid))
        for f in dataclasses.fields(self):
            choices = option_choices(f)
            value = getattr(self, f.name)
            if choices is not None and not any(value == c and type(value) is type(c) for c in choices):
                raise ValueError(f"unknown {f.name}={value!r}; choose one of {', '.join(map(repr, choices))}")

    def to_dict(self) -> dict[str, Any]:
        """The fields, and for a registered subclass its ``architecture`` (HSNet's own dict has none, as the
        checkpoints and run records written before the registry): :func:`config_from_dict` reads it back."""
        fields = dataclasses.asdict(self)
        return fields if self.architecture == HSNetConfig.architecture else {"architecture": self.architecture, **fields}

    def level_channels(self) -> dict[int, int]:
        """|L_p|: correlation channels per pyramid level."""
        taps = get_backbone(self.backbone).level_taps
        return {p: (taps[p - 1] if self.hypercorrelation == "full" else 1) for p in self.pyramid}


def option_fields(config_cls: type[HSNetConfig] | None = None) -> dict[str, dataclasses.Field]:
    """name -> field of the model options of ``config_cls``, or with None of every registered model's config
    (:func:`list_models`, HSNet's first; a name keeps its first declaration), in declaration order."""
    classes = [config_cls] if config_cls is not None else [spec.config for spec in _MODELS.entries()]
    fields: dict[str, dataclasses.Field] = {}
    for cls in classes:
        for f in dataclasses.fields(cls):
            fields.setdefault(f.name, f)
    return fields


def variant_fields(config_cls: type[HSNetConfig] | None = None) -> list[str]:
    """The names of the ablation options (metadata ``variant=True``) of ``config_cls`` or, with None, of every
    registered model (see :func:`option_fields`), in declaration order."""
    return [name for name, f in option_fields(config_cls).items() if f.metadata.get("variant")]


def squeeze_strides(level_strides: Sequence[int]) -> dict[int, tuple[int, int, int]]:
    """Support strides of the three layers of each pyramid level's squeezing block, from the backbone's feature
    stride per level (finest first), so that every level reaches the same support grid: a level r times finer
    than the coarsest squeezes r times more, its first layers' strides doubled in turn. Feature strides 8/16/32
    (the paper's backbones) give (4, 4, 2), (4, 2, 2), (2, 2, 2), as published; one stride for every level (a
    ViT) gives (2, 2, 2) at each.
    """
    coarsest = max(level_strides)
    schedule = {}
    for p, stride in enumerate(level_strides, start=1):
        ratio = coarsest // stride
        if coarsest % stride or ratio & (ratio - 1):
            raise ValueError(f"feature strides {tuple(level_strides)}: every level's stride must be the coarsest "
                             "level's divided by a power of two, so that the levels squeeze to one support grid")
        strides = list(COARSEST_SQUEEZE)
        for i in range(ratio.bit_length() - 1):
            strides[i % len(strides)] *= 2
        schedule[p] = tuple(strides)
    return schedule


def squeeze_schedule(strides: tuple[int, int, int], layers: int) -> list[tuple[int, int, int]]:
    """(out_channels, kernel, support stride) per layer of a squeezing block with the paper's support ``strides``.

    A layer's kernel is its stride + 1 (5 for stride 4, 3 for stride 2, as published). Three layers is the paper's
    block. Fewer layers merge the later strides so that the block still reaches the same support grid (2x2 at
    400 px for strides 8/16/32); a fourth layer is an extra 128-channel, stride-1 layer.
    """
    kernels = tuple(s + 1 for s in strides)
    if layers == 1:
        return [(SQUEEZE_CHANNELS[-1], kernels[0], strides[0] * strides[1] * strides[2])]
    if layers == 2:
        return [(SQUEEZE_CHANNELS[1], kernels[0], strides[0]), (SQUEEZE_CHANNELS[2], kernels[1], strides[1] * strides[2])]
    schedule = list(zip(SQUEEZE_CHANNELS, kernels, strides))
    return schedule + [(SQUEEZE_CHANNELS[-1], 3, 1)] * (layers - 3)


class Block4d(nn.Sequential):
    """A building block (Fig. 3): ``layers`` x (4D conv, GroupNorm(4), ReLU); convs at 0, 3, 6, norms at 1, 4, 7."""

    def __init__(self, in_channels: int, schedule: list[tuple[int, int, int]], kernel: str):
        modules: list[nn.Module] = []
        for out_channels, k, stride in schedule:
            modules += [KERNELS[kernel](in_channels, out_channels, k, stride),
                        nn.GroupNorm(GROUPS, out_channels), nn.ReLU(inplace=True)]
            in_channels = out_channels
        super().__init__(*modules)


def resize_query_dims(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear (align_corners=True) resize of the query dims of (B, C, Hq, Wq, Hs, Ws)."""
    B, C, Hq, Wq, Hs, Ws = x.shape
    planes = x.permute(0, 1, 4, 5, 2, 3).reshape(B, C * Hs * Ws, Hq, Wq)
    planes = F.interpolate(planes, size, mode="bilinear", align_corners=True)
    return planes.view(B, C, Hs, Ws, *size).permute(0, 1, 4, 5, 2, 3)  # (B, C, H', W', Hs, Ws)


class HPNLearner(nn.Module):
    """4D pyramid encoder (squeeze, top-down mix, support-dims average) and 2D context decoder."""

    LEVEL_NAMES = {3: "encoder_layer4", 2: "encoder_layer3", 1: "encoder_layer2"}
    MIX_NAMES = {2: "encoder_layer4to3", 1: "encoder_layer3to2"}

    def __init__(self, level_channels: dict[int, int], level_strides: Sequence[int], kernel: str = "center_pivot",
                 block_layers: int = 3):
        super().__init__()
        self.levels = sorted(level_channels, reverse=True)  # deepest first
        strides = squeeze_strides(level_strides)  # from all three levels' feature strides, also for a partial pyramid
        self.support_strides = {p: math.prod(strides[p]) for p in self.levels}  # any block_layers: same product
        for p in self.levels:
            self.add_module(self.LEVEL_NAMES[p], Block4d(level_channels[p], squeeze_schedule(strides[p], block_layers),
                                                         kernel))
        for p in self.levels[1:]:
            self.add_module(self.MIX_NAMES[p], Block4d(MIX_CHANNELS, [(MIX_CHANNELS, 3, 1)] * block_layers, kernel))
        self.decoder1 = nn.Sequential(nn.Conv2d(128, 128, 3, padding=1), nn.ReLU(inplace=True),
                                      nn.Conv2d(128, 64, 3, padding=1), nn.ReLU(inplace=True))
        self.decoder2 = nn.Sequential(nn.Conv2d(64, 64, 3, padding=1), nn.ReLU(inplace=True),
                                      nn.Conv2d(64, 2, 3, padding=1))

    def squeeze(self, level: int, corr: torch.Tensor) -> torch.Tensor:
        return getattr(self, self.LEVEL_NAMES[level])(corr)  # (B, 128, Hp, Wp, He, We)

    def squeezed_grid(self, level: int, size: tuple[int, int]) -> tuple[int, int]:
        """The support grid a level's (h, w) feature map squeezes to ('same' padding: ceil per strided layer)."""
        return tuple(-(-n // self.support_strides[level]) for n in size)

    def mix(self, level: int, coarse: torch.Tensor, fine: torch.Tensor) -> torch.Tensor:
        if coarse.shape[-2:] != fine.shape[-2:]:
            raise ValueError(f"squeezed support grids differ between pyramid levels ({tuple(coarse.shape[-2:])} vs "
                             f"{tuple(fine.shape[-2:])}); HSNet.valid_img_sizes(size) gives the nearest image sizes "
                             "at which the backbone's levels squeeze to one grid")
        return getattr(self, self.MIX_NAMES[level])(fine + resize_query_dims(coarse, fine.shape[2:4]))  # fine's layout

    def encode(self, hypercorrelation: dict[int, torch.Tensor]) -> torch.Tensor:
        """Hypercorrelation pyramid {p: (B, |L_p|, Hp, Wp, Hp, Wp)} -> context Z (B, 128, H1, W1)."""
        x = self.squeeze(self.levels[0], hypercorrelation[self.levels[0]])
        for p in self.levels[1:]:
            x = self.mix(p, x, self.squeeze(p, hypercorrelation[p]))
        return x.mean(dim=(-2, -1))  # (B, 128, H1, W1)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        x = self.decoder1(z)  # (B, 64, H1, W1)
        x = F.interpolate(x, (2 * x.shape[-2], 2 * x.shape[-1]), mode="bilinear", align_corners=True)
        return self.decoder2(x)  # (B, 2, 2*H1, 2*W1)

    def forward(self, hypercorrelation: dict[int, torch.Tensor]) -> torch.Tensor:
        return self.decode(self.encode(hypercorrelation))


class Hypercorrelation(nn.Module):
    """Eq. 1-2: masked, cosine, ReLU-clamped 4D correlations of the taps, stacked per pyramid level."""

    def __init__(self, config: HSNetConfig):
        super().__init__()
        self.support_masking = config.support_masking
        counts = get_backbone(config.backbone).level_taps
        starts = [0, counts[0], counts[0] + counts[1]]
        self.level_taps: dict[int, list[int]] = {}
        for p in config.pyramid:
            ids = list(range(starts[p - 1], starts[p - 1] + counts[p - 1]))
            self.level_taps[p] = {"full": ids, "shallow": ids[:1], "deep": ids[-1:]}[config.hypercorrelation]

    @staticmethod
    def normalize(taps: list[torch.Tensor]) -> torch.Tensor:
        """Taps (B, C, H, W) of one level -> L2-normalised stack (B, L, C, H*W)."""
        f = torch.stack(taps, dim=1).flatten(3)  # (B, L, C, HW)
        return f / (f.norm(dim=2, keepdim=True) + 1e-5)

    def mask(self, taps: list[torch.Tensor], support_mask: torch.Tensor) -> list[torch.Tensor]:
        if not self.support_masking:
            return taps
        m = support_mask.unsqueeze(1).float()
        return [t * F.interpolate(m, t.shape[-2:], mode="bilinear", align_corners=True) for t in taps]

    def query_features(self, query_taps: list[torch.Tensor]) -> dict[int, torch.Tensor]:
        return {p: self.normalize([query_taps[i] for i in ids]) for p, ids in self.level_taps.items()}

    def support_features(self, support_taps: list[torch.Tensor], support_mask: torch.Tensor) -> dict[int, torch.Tensor]:
        return {p: self.normalize(self.mask([support_taps[i] for i in ids], support_mask))
                for p, ids in self.level_taps.items()}

    @staticmethod
    def correlate(q: torch.Tensor, s: torch.Tensor, q_size: tuple[int, int], s_size: tuple[int, int]) -> torch.Tensor:
        """Normalised stacks (B, L, C, HWq), (B, L, C, HWs) -> clamped correlation (B, L, Hq, Wq, Hs, Ws).

        A support position whose features are zero in every tap (masked out, Eq. 1) correlates to exactly 0,
        so when the mask leaves few positions only those go through the matrix product (same result, and
        the largest level's product shrinks with the support mask's area).
        """
        B, L, _, HWs = s.shape
        live = s.detach().abs().amax(dim=(1, 2)) > 0  # (B, HWs)
        if bool((live.sum(dim=1) >= SPARSE_SUPPORT * HWs).all()):
            corr = torch.matmul(q.transpose(2, 3), s)  # (B, L, HWq, HWs)
        else:
            corr = q.new_zeros(B, L, q.shape[-1], HWs)
            for b in range(B):
                keep = live[b].nonzero().squeeze(1)
                corr[b].index_copy_(2, keep, torch.matmul(q[b].transpose(1, 2), s[b][..., keep]))
        return corr.clamp_(min=0).view(B, L, *q_size, *s_size)

    def forward(self, query_feats: dict[int, torch.Tensor], support_feats: dict[int, torch.Tensor],
                sizes: dict[int, tuple[int, int]]) -> dict[int, torch.Tensor]:
        return {p: self.correlate(query_feats[p], support_feats[p], sizes[p], sizes[p]) for p in self.level_taps}


class HSNet(nn.Module):
    """HSNet with a frozen backbone. ``model(query, support, support_mask)`` gives logits (B, 2, H, W).

    ``HSNet(HSNetConfig(...))`` is the one constructor (``HSNet()``: the paper's ResNet50 model with ImageNet
    weights). The learner's initialisation draws from torch's global generator, as any ``nn.Module`` does;
    :func:`hsnetlib.train.build_model` seeds it without touching the caller's random state.
    """

    def __init__(self, config: HSNetConfig | None = None):
        super().__init__()
        if config is not None and not isinstance(config, HSNetConfig):
            raise TypeError(f"HSNet(config) takes an HSNetConfig, got {type(config).__name__}; "
                            "a dict goes through HSNet.from_config")
        self.config = dataclasses.replace(config) if config is not None else HSNetConfig()
        builds = get_model(self.config.architecture).model
        if not isinstance(self, builds):
            raise TypeError(f"a {type(self.config).__name__} builds a {builds.__name__}, not a {type(self).__name__}; "
                            "HSNet.from_config(config) builds the registered model of a config")
        self.backbone = build_backbone(self.config.backbone, self.config.weights)
        self.backbone.requires_grad_(self.config.finetune_backbone)
        self.correlation = Hypercorrelation(self.config)
        self.hpn_learner = HPNLearner(self.config.level_channels(), get_backbone(self.config.backbone).level_strides,
                                      self.config.kernel, self.config.block_layers)

    @classmethod
    def from_config(cls, config: HSNetConfig | Mapping[str, Any]) -> HSNet:
        """The model of a config or of its ``to_dict()`` (e.g. a checkpoint's or a run record's): an instance of
        the model class registered for the config's ``architecture`` (:func:`register_model`)."""
        config = config if isinstance(config, HSNetConfig) else config_from_dict(config)
        return get_model(config.architecture).model(config)

    # -- training-mode and parameter groups ---------------------------------------------------------
    def train(self, mode: bool = True) -> HSNet:
        super().train(mode)
        self.backbone.eval()  # frozen batch statistics, also when fine-tuning (Fig. 10)
        return self

    def learner_parameters(self) -> Iterator[nn.Parameter]:
        return self.hpn_learner.parameters()

    def backbone_parameters(self) -> Iterator[nn.Parameter]:
        return self.backbone.parameters()

    def num_learnable_parameters(self) -> int:
        return sum(p.numel() for p in self.hpn_learner.parameters())

    # -- the forward pass ---------------------------------------------------------------------------
    def extract_taps(self, img: torch.Tensor) -> list[torch.Tensor]:
        with torch.set_grad_enabled(self.config.finetune_backbone and torch.is_grad_enabled()):
            return get_backbone(self.config.backbone).extract_taps(self.backbone, img)

    def _sizes(self, taps: list[torch.Tensor]) -> dict[int, tuple[int, int]]:
        return {p: tuple(taps[ids[0]].shape[-2:]) for p, ids in self.correlation.level_taps.items()}

    def hypercorrelation(self, query_img: torch.Tensor, support_img: torch.Tensor,
                         support_mask: torch.Tensor) -> list[torch.Tensor]:
        """The hypercorrelation pyramid, deepest level first: [(B, |L_p|, Hp, Wp, Hp, Wp), ...]."""
        check_inputs(query_img, support_img.unsqueeze(1), support_mask.unsqueeze(1))
        pyramid = self._hypercorrelation(self.extract_taps(query_img), support_img, support_mask)
        return [pyramid[p] for p in sorted(pyramid, reverse=True)]

    def _hypercorrelation(self, query_taps: list[torch.Tensor], support_img: torch.Tensor,
                          support_mask: torch.Tensor, query_feats: dict[int, torch.Tensor] | None = None):
        support_taps = self.extract_taps(support_img)
        self.check_grids(self._sizes(support_taps), support_img.shape[-2])
        if query_feats is None:
            query_feats = self.correlation.query_features(query_taps)
        support_feats = self.correlation.support_features(support_taps, support_mask)
        return self.correlation(query_feats, support_feats, self._sizes(query_taps))

    def squeezed_grids(self, sizes: Mapping[int, tuple[int, int]]) -> dict[int, tuple[int, int]]:
        """{level: support grid} of the levels' feature sizes {level: (h, w)} after the squeezing blocks."""
        return {p: self.hpn_learner.squeezed_grid(p, size) for p, size in sizes.items()}

    def check_grids(self, sizes: Mapping[int, tuple[int, int]], img_size: int) -> None:
        """An error naming the nearest valid image sizes where the levels would squeeze to different grids."""
        grids = self.squeezed_grids(sizes)
        if len(set(grids.values())) > 1:
            below, above = self.valid_img_sizes(img_size)
            raise ValueError(f"at {img_size} px the pyramid levels of {self.config.backbone} squeeze to different "
                             f"support grids {grids}; the nearest valid image sizes are {below} and {above} "
                             f"(the paper's: {PAPER_IMG_SIZE})")

    def valid_img_sizes(self, size: int, reach: int = 64) -> tuple[int | None, int | None]:
        """The square image sizes nearest to ``size`` (at or below, at or above; None: none within ``reach`` px)
        that the backbone takes (:meth:`BackboneSpec.valid_sizes`: multiples of its input multiple) and at which
        every pyramid level squeezes to the same support grid. Probes the frozen backbone with blank images."""
        spec = get_backbone(self.config.backbone)
        m = spec.input_multiple
        low, high = spec.valid_sizes(size)
        param = next(self.backbone.parameters())

        def one_grid(s: int) -> bool:
            with torch.no_grad():
                taps = self.extract_taps(torch.zeros(1, 3, s, s, device=param.device, dtype=param.dtype))
            return len(set(self.squeezed_grids(self._sizes(taps)).values())) == 1

        below = next((s for s in range(low, max(m, size - reach) - 1, -m) if one_grid(s)), None)
        above = next((s for s in range(high, size + reach + 1, m) if one_grid(s)), None)
        return below, above

    def forward(self, query_img: torch.Tensor, support_img: torch.Tensor, support_mask: torch.Tensor) -> torch.Tensor:
        """1-shot logits (B, 2, H, W) at the input size."""
        check_inputs(query_img, support_img.unsqueeze(1), support_mask.unsqueeze(1))
        pyramid = self._hypercorrelation(self.extract_taps(query_img), support_img, support_mask)
        logits = self.hpn_learner(pyramid)
        return F.interpolate(logits, query_img.shape[-2:], mode="bilinear", align_corners=True)

    @torch.no_grad()
    def predict_mask(self, query_img: torch.Tensor, support_imgs: torch.Tensor, support_masks: torch.Tensor,
                     original_size: tuple[int, int] | None = None) -> torch.Tensor:
        """K-shot prediction (Sec. 4.5): binary masks (B, H, W), int64, at the input or the original size.

        The query's features are computed once; each support then gives one 1-shot mask by argmax.
        Votes are summed, divided by max(1, the image's maximum vote) and thresholded at 0.5.
        """
        check_inputs(query_img, support_imgs, support_masks)
        size = tuple(original_size) if original_size is not None else tuple(query_img.shape[-2:])
        query_taps = self.extract_taps(query_img)
        query_feats = self.correlation.query_features(query_taps)
        votes = torch.zeros(query_img.shape[0], *size, device=query_img.device)
        for k in range(support_imgs.shape[1]):
            pyramid = self._hypercorrelation(query_taps, support_imgs[:, k], support_masks[:, k], query_feats)
            logits = F.interpolate(self.hpn_learner(pyramid), size, mode="bilinear", align_corners=True)
            votes += logits.argmax(dim=1)
        return vote(votes)

    # -- checkpoints ----------------------------------------------------------------------------------
    def save(self, path: str | os.PathLike, **extra: Any) -> Path:
        """Write the model in the project's format (config + full state dict) atomically; ``extra`` is stored too."""
        payload = {"format": FORMAT, "format_version": FORMAT_VERSION, "config": self.config.to_dict(),
                   "state_dict": self.state_dict(), **extra}
        payload["backbone"] = get_backbone(self.config.backbone).weights_record(self.config.weights)  # name, tag, hash
        return atomic_save(payload, path)

    @classmethod
    def load(cls, path: str | os.PathLike, map_location: str | torch.device = "cpu", backbone: str | None = None) -> HSNet:
        """A model written by :meth:`save` (or a training checkpoint holding one); ``backbone``, when given, must be
        the checkpoint's."""
        return cls.from_payload(load_checkpoint(path, map_location=map_location), path, backbone)

    @classmethod
    def from_payload(cls, payload: Any, path: str | os.PathLike, backbone: str | None = None) -> HSNet:
        """:meth:`load` from the checkpoint's already read contents (`path` names it in errors)."""
        if not (isinstance(payload, dict) and payload.get("format") == FORMAT):
            raise ValueError(f"{path} is not an hsnetlib checkpoint (no 'format': '{FORMAT}' entry); "
                             "for the authors' released best_model.pt use HSNet.from_official_checkpoint")
        if backbone is not None and backbone != payload["config"]["backbone"]:
            raise ValueError(f"{path} is a checkpoint of an HSNet with a {payload['config']['backbone']} backbone, "
                             f"not {get_backbone(backbone).name}")
        # the backbone's weights come from the state dict; the config keeps the initialisation it was trained from
        model = cls.from_config(dict(payload["config"], weights=None))
        model.config.weights = payload["config"].get("weights")
        _load_strict(model, payload["state_dict"], path)
        return model

    @classmethod
    def from_official_checkpoint(cls, path: str | os.PathLike, backbone: str | None = None,
                                 map_location: str | torch.device = "cpu") -> HSNet:
        """Load an authors' released ``best_model.pt`` (keys prefixed ``module.``, backbone included).

        ``backbone`` is inferred from the checkpoint when not given; a checkpoint of another backbone
        than the one asked for is an error.
        """
        if backbone is not None:
            get_backbone(backbone)
        return cls.from_official_state(load_checkpoint(path, map_location=map_location), path, backbone)

    @classmethod
    def from_official_state(cls, state: Any, path: str | os.PathLike, backbone: str | None = None) -> HSNet:
        """:meth:`from_official_checkpoint` from the checkpoint's already read contents."""
        if isinstance(state, dict) and state.get("format") == FORMAT:
            raise ValueError(f"{path} is an hsnetlib checkpoint; load it with HSNet.load")
        if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
            raise ValueError(f"{path} is not a released HSNet state dict (expected a dict of tensors)")
        state = {k.removeprefix("module."): v for k, v in state.items()}
        found = infer_backbone(state, path)
        state = {k: v for k, v in state.items()
                 if not k.startswith(tuple(f"backbone.{h}." for h in get_backbone(found).heads))}
        if backbone is not None and backbone != found:
            raise ValueError(f"{path} is a checkpoint of an HSNet with a {found} backbone, not {backbone}")
        # config.weights stays None: the backbone's weights are the checkpoint's, so HSNet(model.config) must not
        # read the checkpoint as a torchvision state dict
        model = cls(HSNetConfig(backbone=found, weights=None))
        _load_strict(model, state, path)
        return model


# -- models built on HSNet: a registry, one entry per config class -----------------------------------------------
@dataclass(frozen=True)
class ModelSpec:
    """A registered model: its config class (an :class:`HSNetConfig` subclass) and the module it builds."""
    name: str                  # the config's ``architecture``, stored in its to_dict() and so in every checkpoint
    config: type[HSNetConfig]
    model: type[HSNet]


_MODELS: Registry[ModelSpec] = Registry("model")


def register_model(config_cls: type[HSNetConfig], model_cls: type[HSNet], *, replace: bool = False) -> ModelSpec:
    """Register ``model_cls`` as the model built from ``config_cls`` (under ``config_cls.architecture``): a subclass
    of HSNetConfig declaring its own ``architecture: ClassVar[str]`` and its options (:func:`option`), and a
    subclass of HSNet reading them. A name already taken is an error unless ``replace``."""
    if not (isinstance(config_cls, type) and issubclass(config_cls, HSNetConfig) and dataclasses.is_dataclass(config_cls)):
        raise TypeError(f"register_model: {config_cls!r} is not an HSNetConfig dataclass (subclass it with "
                        "@dataclass(kw_only=True))")
    if not (isinstance(model_cls, type) and issubclass(model_cls, HSNet)):
        raise TypeError(f"register_model: {model_cls!r} is not a subclass of HSNet")
    name = config_cls.architecture
    if config_cls is not HSNetConfig and "architecture" not in vars(config_cls):
        raise ValueError(f"{config_cls.__name__} must name its model: architecture: ClassVar[str] = '...' "
                         f"(it inherits {name!r})")
    return _MODELS.register(name, ModelSpec(name, config_cls, model_cls), replace=replace)


def unregister_model(name: str) -> None:
    """Remove a registered model (HSNet's own stays)."""
    if name == HSNetConfig.architecture:
        raise ValueError(f"the model {name!r} cannot be unregistered")
    _MODELS.unregister(name)


def get_model(name: str) -> ModelSpec:
    return _MODELS.get(name)


def list_models() -> list[str]:
    """The registered model names, HSNet's first."""
    return _MODELS.names()


def config_from_dict(config: Mapping[str, Any]) -> HSNetConfig:
    """The config of a :meth:`HSNetConfig.to_dict` (a checkpoint's, a config.json's or a run record's model): the
    registered config class of its ``architecture`` (none: HSNet's)."""
    fields = dict(config)
    return get_model(fields.pop("architecture", HSNetConfig.architecture)).config(**fields)


def config_class(options: Sequence[str] = ()) -> type[HSNetConfig]:
    """The config class of the first registered model that declares every one of ``options`` (HSNet's for its own
    options): the class a study of an option, or a notebook's variant, builds its configs from."""
    for spec in _MODELS.entries():
        if set(options) <= set(option_fields(spec.config)):
            return spec.config
    raise ValueError(f"no registered model has the option(s) {', '.join(map(repr, options))}; registered models: "
                     f"{', '.join(list_models())}")


register_model(HSNetConfig, HSNet)


def infer_backbone(state: dict[str, torch.Tensor], path: str | os.PathLike) -> str:
    """Which backbone a released state dict belongs to, from its keys and learner shapes."""
    if any(k.startswith("backbone.features.") for k in state):
        return "vgg16"
    key = "hpn_learner.encoder_layer3.0.conv1.weight"
    if key not in state:
        raise ValueError(f"{path} has no key {key!r}: not an HSNet state dict")
    middle = state[key].shape[1]
    by_channels = {get_backbone(n).level_taps[1]: n for n in ("resnet50", "resnet101")}
    if middle not in by_channels:
        raise ValueError(f"{path}: {key} has {middle} input channels, which matches no known backbone")
    return by_channels[middle]


def _load_strict(model: nn.Module, state: dict[str, torch.Tensor], path) -> None:
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    wrong = [f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
             for k in own if k in state and state[k].shape != own[k].shape]
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing key(s): {', '.join(missing[:8])}{' ...' if len(missing) > 8 else ''}")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected key(s): {', '.join(unexpected[:8])}"
                        f"{' ...' if len(unexpected) > 8 else ''}")
    if wrong:
        problems.append(f"{len(wrong)} shape mismatch(es): {'; '.join(wrong[:4])}")
    if problems:
        raise ValueError(f"checkpoint {path} does not fit the model: " + " | ".join(problems))
    model.load_state_dict(state, strict=True)


def vote(votes: torch.Tensor) -> torch.Tensor:
    """K-shot voting rule: (B, H, W) summed votes -> binary masks."""
    peak = votes.flatten(1).max(dim=1).values.clamp(min=1).view(-1, 1, 1)
    return (votes / peak >= 0.5).long()


def check_inputs(query_img: torch.Tensor, support_imgs: torch.Tensor, support_masks: torch.Tensor) -> None:
    """Validate ranks, sizes and mask values of an episode batch (supports as (B, K, ...))."""
    if query_img.dim() != 4 or query_img.shape[1] != 3:
        raise ValueError(f"query_img must be (B, 3, H, W), got {tuple(query_img.shape)}")
    B, _, H, W = query_img.shape
    if support_imgs.dim() != 5 or support_imgs.shape[0] != B or support_imgs.shape[2:] != (3, H, W):
        raise ValueError(f"support images must be (B, K, 3, H, W) = ({B}, K, 3, {H}, {W}) "
                         f"(one support: (B, 3, H, W)), got {tuple(support_imgs.shape)}")
    K = support_imgs.shape[1]
    if support_masks.shape != (B, K, H, W):
        raise ValueError(f"support masks must be (B, K, H, W) = ({B}, {K}, {H}, {W}) "
                         f"(one support: (B, H, W)), got {tuple(support_masks.shape)}")
    if K < 1:
        raise ValueError("at least one support is needed")
    if support_masks.numel() and (support_masks.min() < 0 or support_masks.max() > 1):
        raise ValueError(f"support mask values must lie in [0, 1], got [{support_masks.min().item()}, "
                         f"{support_masks.max().item()}] (PASCAL boundary pixels (255) must be removed first)")
