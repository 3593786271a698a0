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

from hsnetlib import data
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


# Until ``hsnetlib.data.get_benchmark`` lands: the labels and published tables of the known benchmarks.
_INTERIM = {
    "pascal": ("PASCAL-5i", ("table1", "table4", "tableA1", "tableA2", "tableA3", "tableA4", "backbones")),
    "coco": ("COCO-20i", ("table2", "tableA2", "backbones")),
    "fss": ("FSS-1000", ("table3", "cdfss")),
    "pascal-all": ("PASCAL VOC (all 20 classes)", ("cdfss",)),
    "deepglobe": ("Deepglobe", ("cdfss",)),
    "isic": ("ISIC2018", ("cdfss",)),
    "lung": ("Chest X-ray", ("cdfss",)),
}


def benchmark(name: str) -> Benchmark:
    """The registered benchmark `name`; one the registry does not know (registered only in the process that ran
    it) is labelled by its name, has no paper tables and takes its folds from its runs."""
    label, tables = _INTERIM.get(name, (name, ()))
    return Benchmark(name, label, data.NFOLDS.get(name, 1 if name in _INTERIM else None), tables)


# Until the backbone registry (``hsnetlib.backbones.list_backbones``) lands: the names it registers (issue 15).
_REGISTERED_BACKBONES = ("vgg16", "resnet50", "resnet101", "swin_base_patch4_window12_384", "convnext_base",
                         "vit_small_patch14_dinov2", "vit_base_patch14_dinov2", "vit_large_patch14_dinov2")


def new_backbones(paper_backbones: set[str]) -> tuple[str, ...]:
    """The registered backbones the paper does not use, in registration order."""
    return tuple(name for name in _REGISTERED_BACKBONES if name not in paper_backbones)
