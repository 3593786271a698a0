"""What the results read from hsnetlib's registries: the one place each of them is consulted.

* :func:`variant_defaults`: the ablation options of :class:`hsnetlib.model.HSNetConfig` and their
  defaults (the results' variant columns and the default variant every paper table holds fixed);
* :func:`benchmark`: a benchmark's display label, its number of folds and whether it has published
  numbers (a benchmark without paper tables is never compared with them);
* :func:`new_backbones`: the backbones of the "HSNet across backbones" table (every registered one
  the paper does not use).

Each reads its registry in one function, so that a registry change is one edit here.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from hsnetlib.model import HSNetConfig

# The backbone and its weights tell a table's lines apart; the other model options are the variant.
LINE_MODEL_FIELDS = ("backbone", "weights")


def variant_defaults() -> dict[str, Any]:
    """{ablation option: its default}, in HSNetConfig's declaration order (the defaults read from the dataclass).

    Until ``hsnetlib.model.variant_fields()`` lands: every field but the backbone and its weights."""
    return {f.name: (f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default)
            for f in dataclasses.fields(HSNetConfig) if f.name not in LINE_MODEL_FIELDS}


@dataclass(frozen=True)
class Benchmark:
    """What the results need of a registered benchmark."""
    name: str
    label: str
    nfolds: int | None          # None: unknown here (a benchmark registered only where its runs ran)
    paper_tables: tuple[str, ...]


# Until ``hsnetlib.data.get_benchmark`` lands (then: ``_registered = hsnetlib.data.get_benchmark``): the labels,
# folds and published tables it registers.
_INTERIM = {
    "pascal": ("PASCAL-5i", 4, ("table1", "table4", "tableA1", "tableA2", "tableA3", "tableA4")),
    "coco": ("COCO-20i", 4, ("table2", "tableA2")),
    "fss": ("FSS-1000", 1, ("table3", "cdfss")),
    "folder": ("own folder", 1, ()),
    "pascal-all": ("PASCAL VOC (all 20 classes)", 1, ()),
    "deepglobe": ("Deepglobe", 1, ("cdfss",)),
    "isic": ("ISIC2018", 1, ("cdfss",)),
    "lung": ("Chest X-ray", 1, ("cdfss",)),
}


def _registered(name: str) -> Benchmark:
    if name not in _INTERIM:
        raise ValueError(f"unknown benchmark {name!r}; registered: {', '.join(_INTERIM)}")
    return Benchmark(name, *_INTERIM[name])


def benchmark(name: str) -> Benchmark:
    """The registered benchmark `name` (its label, folds and paper tables: any reads as published numbers to
    compare with); one the registry does not know (registered only in the process that ran it) is labelled by
    its name, has no paper tables and takes its folds from its runs."""
    try:
        return _registered(name)
    except ValueError:
        return Benchmark(name, name, None, ())


# Until the backbone registry lands (then: ``hsnetlib.backbones.list_backbones()`` in new_backbones): the names it
# registers (issue 15).
_REGISTERED_BACKBONES = ("vgg16", "resnet50", "resnet101", "swin_base_patch4_window12_384", "convnext_base",
                         "vit_small_patch14_dinov2", "vit_base_patch14_dinov2", "vit_large_patch14_dinov2")


def new_backbones(paper_backbones: set[str]) -> tuple[str, ...]:
    """The registered backbones the paper does not use, in registration order."""
    return tuple(name for name in _REGISTERED_BACKBONES if name not in paper_backbones)
