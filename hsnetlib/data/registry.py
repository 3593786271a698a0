"""The benchmark registry: one `BenchmarkSpec` per benchmark, everything else derives from it.

    register_benchmark(BenchmarkSpec(name="mine", label="My set", layout=MyLayout, nfolds=1, ...))
    build_dataset("mine", root, fold=0, split="test", shot=1)

A spec names the layout class that reads the benchmark's directory tree, its folds and which classes a
fold holds out, its test-episode count, how it is scored, its own options (every ambiguity of a
protocol is one, with the protocol's default; the chosen values end up in `DatasetConfig.options` and
so in every run record), and the published tables it appears in (empty: never compared with
published numbers).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

from hsnetlib.data.base import SPLITS, Layout
from hsnetlib.registry import Registry

@dataclass(frozen=True, kw_only=True)
class ScoringOptions:
    """How a benchmark's episodes are scored (hsnet-protocol.md "Metrics", cdfss-protocol.md section 5).

    Every registered benchmark pools per class: IoU_c = sum of intersections / sum of unions over the
    class's episodes, mIoU = their mean, so a one-class set (Chest X-ray) scores its foreground IoU pooled
    over all episodes, not a mean of episode IoUs (hsnetlib.metrics.IoUMeter)."""

    ignore_label: bool = False  # the data has a boundary label (PASCAL's 255), ignored in scoring by default


@dataclass(frozen=True, kw_only=True)
class BenchmarkOption:
    """A benchmark's own option: its default (the protocol's), its allowed values (None: any) and help."""

    default: Any
    help: str
    choices: tuple[Any, ...] | None = None


@dataclass(frozen=True, kw_only=True)
class BenchmarkSpec:
    """One registered benchmark."""

    name: str  # the name build_dataset, the CLI, notebooks and grids use
    label: str  # display label in tables and figures
    layout: type[Layout]  # layout(config, spec) reads the directory tree
    nfolds: int = 1
    class_names: tuple[str, ...] | None = None  # None: read from the data (split lists, class split, options)
    class_split: Callable[[int], Sequence[int]] | None = None  # fold -> held-out (val/test) class ids
    splits: tuple[str, ...] = SPLITS  # the splits it offers
    test_episodes: int | None = None  # val/test episodes; None: every query of the split once
    scoring: ScoringOptions = field(default_factory=ScoringOptions)
    options: Mapping[str, BenchmarkOption] = field(default_factory=dict)
    paper_tables: tuple[str, ...] = ()  # keys of the published tables it appears in; () = never compared
    synthetic: str | None = None  # the hsnetlib.synthetic layout that generates data for it
    needs_class_split: bool = False  # build_dataset needs class_split= (a dict or a JSON path)
    note: str = ""  # said when a split it lacks is asked for

    def __post_init__(self):
        if not self.name or not isinstance(self.name, str):
            raise ValueError(f"BenchmarkSpec(name={self.name!r}): expected a non-empty string")
        if not (isinstance(self.nfolds, int) and self.nfolds >= 1):
            raise ValueError(f"BenchmarkSpec {self.name!r}: nfolds={self.nfolds!r}, expected an integer >= 1")
        if not set(self.splits) <= set(SPLITS) or not self.splits:
            raise ValueError(f"BenchmarkSpec {self.name!r}: splits={self.splits!r}, expected some of {SPLITS}")
        if self.test_episodes is not None and not (isinstance(self.test_episodes, int) and self.test_episodes >= 1):
            raise ValueError(f"BenchmarkSpec {self.name!r}: test_episodes={self.test_episodes!r}, expected None or >= 1")

    def resolve_options(self, given: Mapping[str, Any] | None) -> dict[str, Any]:
        """`given` checked against the declared options, every default filled in (declaration order)."""
        given = dict(given or {})
        unknown = sorted(set(given) - set(self.options))
        if unknown:
            raise ValueError(f"benchmark {self.name!r} has no option(s) {unknown}; its options: {sorted(self.options) or 'none'}")
        resolved = {}
        for name, option in self.options.items():
            value = given.get(name, option.default)
            if option.choices is not None and value not in option.choices:
                raise ValueError(f"benchmark {self.name!r}: option {name}={value!r}, expected one of {option.choices}")
            resolved[name] = value
        return resolved


_BENCHMARKS: Registry[BenchmarkSpec] = Registry("benchmark")


def register_benchmark(spec: BenchmarkSpec, *, replace: bool = False) -> BenchmarkSpec:
    """Register `spec` under `spec.name`; a name already taken is an error unless `replace`."""
    if not isinstance(spec, BenchmarkSpec):
        raise TypeError(f"register_benchmark expects a BenchmarkSpec, got {type(spec).__name__}")
    return _BENCHMARKS.register(spec.name, spec, replace=replace)


def unregister_benchmark(name: str) -> None:
    """Remove a registered benchmark (e.g. one a test registered)."""
    _BENCHMARKS.unregister(name)


def get_benchmark(name: str) -> BenchmarkSpec:
    """The spec registered as `name`; an unknown name's error lists the registered ones."""
    return _BENCHMARKS.get(name)


def list_benchmarks() -> list[str]:
    """Registered benchmark names in registration order."""
    return _BENCHMARKS.names()
