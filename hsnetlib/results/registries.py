"""What the results read from hsnetlib's registries: the one place each of them is consulted.

* :func:`variant_defaults`: the ablation options of :class:`hsnetlib.model.HSNetConfig` (and of every
  registered model built on it) and their
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

from hsnetlib.backbones import list_backbones
from hsnetlib.data import get_benchmark
from hsnetlib.model import HSNetConfig, option_fields, variant_fields

# The model options that are no ablation option (the backbone and its weights) tell a table's lines apart.
LINE_MODEL_FIELDS = tuple(name for name in option_fields(HSNetConfig) if name not in variant_fields(HSNetConfig))


def variant_defaults() -> dict[str, Any]:
    """{ablation option (:func:`hsnetlib.model.variant_fields`): its default}, in declaration order: HSNetConfig's,
    then those of the models registered on it (:func:`hsnetlib.model.register_model`; a record of a model without
    such an option reads as its default). The defaults are read from the dataclasses."""
    fields = option_fields()
    return {name: _default(fields[name]) for name in variant_fields()}


def _default(f: dataclasses.Field) -> Any:
    return f.default_factory() if f.default is dataclasses.MISSING else f.default


@dataclass(frozen=True)
class Benchmark:
    """What the results need of a registered benchmark."""
    name: str
    label: str
    nfolds: int | None          # None: unknown here (a benchmark registered only where its runs ran)
    paper_tables: tuple[str, ...]


def benchmark(name: str) -> Benchmark:
    """The registered benchmark `name` (its label, folds and paper tables: any reads as published numbers to
    compare with); one the registry does not know (registered only in the process that ran it) is labelled by
    its name, has no paper tables and takes its folds from its runs."""
    try:
        spec = get_benchmark(name)
    except ValueError:
        return Benchmark(name, name, None, ())
    return Benchmark(name, spec.label, spec.nfolds, tuple(spec.paper_tables))


def new_backbones(paper_backbones: set[str]) -> tuple[str, ...]:
    """The registered backbones the paper does not use, in registration order."""
    return tuple(name for name in list_backbones() if name not in paper_backbones)
