"""Gather every run's metrics.json into the paper's tables and figures, beside the published numbers.

    python -m hsnetlib.results --runs runs/ --out results/

reads every ``metrics.json`` written by :func:`hsnetlib.suite.write_run_record` under ``--runs``
and writes into ``--out``:

* ``table1.md`` .. ``tableA4.md`` (and ``.csv``): the paper's Tables 1-4 and A1-A4
  (:data:`hsnetlib.paper.TABLES`). A *line* is one method of the table (a backbone and the value of
  the table's model option) on one data set, image size and scoring size. In markdown each line
  of the paper protocol reads as up to four rows: ``paper`` (the published numbers), ``ours``
  (mIoU with its bootstrap 95% interval), ``Δ ours − paper``, and, in the ablation tables,
  ``Δ vs <reference>, paired`` (the variant minus its study's reference on the very same
  episodes, with the paired bootstrap interval). A cell without a run reads "–"; a line without
  any run is only its ``paper`` row, marked "not run here". Lines of the synthetic demo (or of a
  randomly initialised backbone, or a data set the paper does not use) sit in a separate table
  below and are never compared with the paper. An ablation variant whose training never left
  the all-background solution (training entry ``converged: false``) reads "not converged" with
  the figure of its learning curves instead of a number. Each ``ours`` row names its run
  records ([1], [2] ...), listed under the table with notebook, seed, checkpoint, code version
  and parameters. The CSV holds the same numbers, one row per line and cell (see
  :data:`CSV_COLUMNS`).
* ``baselines.csv`` (and ``.md``): every evaluation that carries trivial baselines: the model's
  mIoU / FB-IoU next to all-foreground and all-background predictions scored on the same episodes
  with the same meter, and the margin over the better baseline.
* ``fig6.png``, ``fig7.png``: the hypercorrelation and pyramid ablations (Tables A3 / A4) as bars
  with their intervals, the paper's panel apart from ours; ``fig9.png``: mIoU and model size vs.
  4D layers per block, and the variants' validation curves; ``fig10.png``: training / validation
  mIoU per epoch, frozen vs. fine-tuned backbone, per fold; ``curves_<study>.png``: the learning
  curves of every other study with trainings. A figure without any run is not drawn.
* ``runs.csv``: every run record read (run folder, notebook, seed, checkpoints with their sha256, code
  version, device, parameters as JSON): what the tables' ``runs`` name.
* ``README.md``: what each file holds, which notebook and grid produce it, how to read it, and the
  tables rendered.

Sections of metrics.json read here (written by :mod:`hsnetlib.experiments`):
``evaluations`` (one dict per scored model: study, label, benchmark, dataset, fold, nshot,
ignore_label, img_size, original_size, episodes, model (HSNetConfig), learnable_params, miou, fbiou,
ci95, baselines and, for an ablation variant, ``paired``: {reference, delta_miou, ci95, episodes}),
``profiles`` (model, img_size, nshot, device, learnable_params, time_ms, memory_gb, gflops) and
``trainings`` (study, label, model, dataset, fold, converged, history: one dict per epoch with
train_miou / val_miou ...). The ``study`` ("main" or an ablation) decides which table an evaluation
fills (:data:`TABLE_STUDIES`): an ablation's reference variant stays in its ablation's table. An
evaluation is matched to its training by run, study, label and fold. Older records without
``ci95``, ``paired`` or ``converged`` are shown without that interval, without the paired
difference, and as converged.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import pandas as pd

from hsnetlib.paper import BENCHMARK_LABELS, COLUMN_LABELS, FIGURES_WITHOUT_NUMBERS, TABLES, PaperRow, PaperTable
from hsnetlib.suite import project_root

NFOLDS = {"pascal": 4, "coco": 4, "fss": 1, "folder": 1}
DEFAULT_VARIANT: dict[str, Any] = {"hypercorrelation": "full", "pyramid": (1, 2, 3), "kernel": "center_pivot",
                                   "block_layers": 3, "support_masking": True, "finetune_backbone": False}
MODEL_FIELDS = ("backbone", "weights", *DEFAULT_VARIANT)
LINE_KEYS = ("section", "dataset", "backbone", "pretrained", "img_size", "original_size", "row_value")
# Sections of a table, in their order: the paper's setting (real benchmark, ImageNet backbone) is compared
# with the published numbers; the others never are.
PAPER, OTHER, SYNTHETIC = "paper protocol", "not the paper's setting", "synthetic demo"
SECTION_TEXT = {
    PAPER: "**Paper protocol** (the paper's benchmark, ImageNet backbone): Δ = ours − paper.",
    OTHER: "**Not the paper's setting** (a randomly initialised backbone or another data set): ours only, "
           "never compared with the paper.",
    SYNTHETIC: "**Synthetic demo** (generated images, randomly initialised backbone, small scale): it shows that "
               "the pipeline runs end to end; it is not a reproduction and is never compared with the paper.",
}
# Which studies (the `study` of an evaluation, see hsnetlib.experiments) fill each table, and with which
# row values (None: any). An ablation's reference variant has the default options but was trained with the
# ablation's budget, so it appears in the ablation's table only.
TABLE_STUDIES: dict[str, dict[str, tuple[Any, ...] | None]] = {
    "table1": {"main": None, "support_masking": (False,)},
    "table2": {"main": None},
    "table3": {"main": None},
    "table4": {"kernel": None},
    "tableA1": {"main": None},
    "tableA2": {"main": None},
    "tableA3": {"hypercorrelation": None},
    "tableA4": {"pyramid": None},
}
# The figure with the learning curves of each study's trainings (see :func:`curves_figure_name`).
CURVE_FIGURES = {"finetune": "fig10", "block_layers": "fig9"}

# Which notebook (and grid runs) produce each output.
SOURCES = {
    "table1": "02_evaluate.ipynb (ignore_label on, per backbone and fold; grids: `evaluate-*`), "
              "08_no_support_masking.ipynb for the † row",
    "table2": "02_evaluate.ipynb on COCO-20i (grids/paper.toml: `coco-evaluate-*`)",
    "table3": "02_evaluate.ipynb on FSS-1000 (grids/paper.toml: `fss-evaluate-*`)",
    "table4": "05_ablation_kernel.ipynb (mIoU per kernel, and size / time / memory / FLOPs)",
    "tableA1": "02_evaluate.ipynb with ignore_label=false (grids: `evaluate-noignore-*`)",
    "tableA2": "02_evaluate.ipynb with nshot 1, 5, 10 (ResNet50)",
    "tableA3": "03_ablation_hypercorrelation.ipynb",
    "tableA4": "04_ablation_pyramid.ipynb",
    "fig6": "03_ablation_hypercorrelation.ipynb",
    "fig7": "04_ablation_pyramid.ipynb",
    "fig9": "06_ablation_block_layers.ipynb (evaluations, and the training histories of each variant)",
    "fig10": "07_ablation_finetune.ipynb (the training histories of both variants, per fold)",
    "baselines": "02_evaluate.ipynb (and every notebook that scores the trivial baselines)",
}
# Columns of a table's CSV: one row per line and cell.
CSV_COLUMNS = (
    "section", "benchmark", "dataset", "backbone", "method", "img_size", "original_size", "shot", "column",
    "paper", "ours", "ci95_low", "ci95_high", "delta_vs_paper", "reference", "paired_delta", "paired_ci95_low",
    "paired_ci95_high", "status", "n_runs", "episodes", "curves", "runs",
)
NOT_RUN, MEASURED, NOT_CONVERGED = "no run", "measured", "not converged"


# -- reading runs ----------------------------------------------------------------------------------
def read_records(runs_dir: str | Path) -> list[tuple[str, dict[str, Any]]]:
    """(run id, record) of every suite run record under runs_dir (other metrics.json files are ignored)."""
    runs_dir = Path(runs_dir)
    if not runs_dir.is_dir():
        raise FileNotFoundError(f"runs folder {runs_dir} does not exist (run a grid first: python -m hsnetlib.suite "
                                "run grids/demo.toml)")
    records = []
    for path in sorted(runs_dir.rglob("metrics.json")):
        try:
            record = json.loads(path.read_text())
        except json.JSONDecodeError as err:
            raise ValueError(f"{path} is not valid JSON: {err}") from err
        if isinstance(record, dict) and "notebook" in record and "provenance" in record:
            records.append((path.parent.relative_to(runs_dir).as_posix(), record))
    return records


def _model_columns(model: dict[str, Any] | None) -> dict[str, Any]:
    model = dict(model or {})
    row = {k: model.get(k, DEFAULT_VARIANT.get(k)) for k in MODEL_FIELDS}
    row["pyramid"] = tuple(row["pyramid"]) if row["pyramid"] is not None else None
    row["pretrained"] = row["weights"] is not None
    return row


def _provenance(run: str, record: dict[str, Any]) -> dict[str, Any]:
    """Where a run record came from: notebook, parameters, seed, checkpoint, code version, device."""
    provenance = record.get("provenance", {})
    checkpoints = {"": record.get("checkpoint"), **(record.get("checkpoints") or {})}
    return {"run": run, "notebook": record.get("notebook"), "seed": record.get("seed"),
            "checkpoints": _in_project("; ".join(f"{name + ': ' if name else ''}{c['path']} (sha256 {c['sha256'][:12]})"
                                                 for name, c in checkpoints.items() if c)),
            "code_version": provenance.get("code_version"), "device": provenance.get("device"),
            "parameters": _in_project(json.dumps(record.get("parameters", {}), sort_keys=True))}


def _in_project(text: str) -> str:
    """Paths inside the project written relative to its root, so tables read the same on every machine."""
    return text.replace(f"{project_root()}{os.sep}", "")


def _interval(entry: dict[str, Any], prefix: str) -> dict[str, float]:
    """A ``ci95: [lo, hi]`` of an entry as two floats (NaN where the entry has none)."""
    low, high = entry.get("ci95") or (np.nan, np.nan)
    return {f"{prefix}ci95_low": float(low), f"{prefix}ci95_high": float(high)}


def _evaluation_row(entry: dict[str, Any]) -> dict[str, Any]:
    """An evaluation entry flattened: intervals, paired difference and baselines as columns."""
    paired = entry.get("paired") or {}
    row = {**_interval(entry, ""), "reference": paired.get("reference"),
           "paired_delta": float(paired.get("delta_miou", np.nan)), **_interval(paired, "paired_")}
    for name, scores in (entry.get("baselines") or {}).items():
        row[f"{name}_miou"], row[f"{name}_fbiou"] = scores["miou"], scores["fbiou"]
    return row


def collect(runs_dir: str | Path) -> dict[str, pd.DataFrame]:
    """Every evaluation, profile and training of the runs, one frame each (model options as columns), and
    ``runs``: the provenance of every run record. Evaluations carry their training's ``converged``."""
    rows: dict[str, list[dict[str, Any]]] = {"evaluations": [], "profiles": [], "trainings": [], "runs": []}
    for run, record in read_records(runs_dir):
        provenance = _provenance(run, record)
        rows["runs"].append(provenance)
        common = {"run": run, "notebook": provenance["notebook"], "code_version": provenance["code_version"],
                  "device": provenance["device"], "study": "main", "label": "HSNet"}
        for section in ("evaluations", "profiles", "trainings"):
            for entry in record.get(section, []):
                row = {**common, **{k: v for k, v in entry.items() if k not in ("model", "ci95", "paired")},
                       **_model_columns(entry.get("model"))}
                if section == "evaluations":
                    row.update(_evaluation_row(entry))
                rows[section].append(row)
    frames = {k: pd.DataFrame(v) for k, v in rows.items()}
    frames["evaluations"] = _with_convergence(frames["evaluations"], frames["trainings"])
    return frames


def _with_convergence(evals: pd.DataFrame, trainings: pd.DataFrame) -> pd.DataFrame:
    """evals with ``converged`` of the training behind each evaluation (same run, study, label, fold); NaN
    where there is no such training or its entry predates the field."""
    keys = ["run", "study", "label", "fold"]
    if evals.empty or trainings.empty or "converged" not in trainings:
        return evals.assign(converged=np.nan)
    return evals.merge(trainings[keys + ["converged"]].drop_duplicates(keys), on=keys, how="left")


# -- tables ----------------------------------------------------------------------------------------
def dataset_label(dataset: str) -> str:
    if dataset in BENCHMARK_LABELS:
        return BENCHMARK_LABELS[dataset]
    return f"{dataset} (synthetic demo: not the paper's benchmark)" if dataset.startswith("synthetic") else dataset


def section_of(dataset: str, pretrained: bool) -> str:
    """Which part of a table a line belongs to: only the paper's setting is compared with the paper."""
    if dataset.startswith("synthetic"):
        return SYNTHETIC
    return PAPER if dataset in BENCHMARK_LABELS and pretrained else OTHER


def curves_figure_name(study: str) -> str:
    """The figure (file stem) with the learning curves of a study's trainings."""
    return CURVE_FIGURES.get(study, f"curves_{study}")


def _select(evals: pd.DataFrame, table: PaperTable) -> pd.DataFrame:
    """Evaluations in the table's setting: its benchmarks (real or synthetic in the same layout), the other
    model options at their defaults and, on PASCAL layouts, the table's ignore-label choice."""
    if evals.empty:
        return evals
    keep = evals["benchmark"].isin(table.benchmarks)
    studies = TABLE_STUDIES[table.key]
    keep &= np.array([study in studies and (studies[study] is None or value in studies[study]) for study, value in
                      zip(evals["study"], evals[table.row_field] if table.row_field else evals["study"])], dtype=bool)
    for name, default in DEFAULT_VARIANT.items():
        if name != table.row_field:
            keep &= evals[name].apply(lambda v, d=default: v == d)
    if table.ignore_label is not None:
        keep &= (evals["benchmark"] != "pascal") | (evals["ignore_label"] == table.ignore_label)
    selected = evals[keep].copy()
    selected["row_value"] = selected[table.row_field] if table.row_field else None
    selected["section"] = [section_of(d, p) for d, p in zip(selected["dataset"], selected["pretrained"])]
    return selected


def mean_interval(values: Iterable[float], lows: Iterable[float], highs: Iterable[float]
                  ) -> tuple[float, float, float]:
    """Mean of independent estimates and its 95% interval.

    One estimate keeps its own interval. For n estimates (runs of one cell, or the folds of a mean) the
    half-widths below and above the estimates are combined in quadrature and divided by n (normal
    approximation, the runs or folds taken as independent). NaN bounds (records without an interval)
    give a NaN interval.
    """
    v, lo, hi = (np.asarray(list(x), dtype=float) for x in (values, lows, highs))
    mean = float(v.mean())
    return (mean, mean - float(np.sqrt(np.sum((v - lo) ** 2))) / len(v),
            mean + float(np.sqrt(np.sum((hi - v) ** 2))) / len(v))


def _empty_cell() -> dict[str, Any]:
    return {"ours": np.nan, "ci95_low": np.nan, "ci95_high": np.nan, "fbiou": np.nan, "reference": None,
            "paired_delta": np.nan, "paired_ci95_low": np.nan, "paired_ci95_high": np.nan, "status": NOT_RUN,
            "n_runs": 0, "episodes": None, "runs": ()}


def _average(parts: list[dict[str, Any]], n_runs: int, episodes: Any, runs: tuple[str, ...]) -> dict[str, Any]:
    """One cell from estimates (the runs of a fold, or the folds of a mean): not run if any part is, not
    converged if any part is, otherwise the mean with its interval, FB-IoU and paired difference."""
    statuses = {p["status"] for p in parts}
    if not parts or NOT_RUN in statuses:
        return _empty_cell()
    cell = {**_empty_cell(), "n_runs": n_runs, "episodes": episodes, "runs": runs, "status": NOT_CONVERGED}
    if NOT_CONVERGED in statuses:
        return cell
    ours = mean_interval(*([p[k] for p in parts] for k in ("ours", "ci95_low", "ci95_high")))
    cell.update(status=MEASURED, fbiou=float(np.mean([p["fbiou"] for p in parts])),
                **dict(zip(("ours", "ci95_low", "ci95_high"), ours)))
    references = {p["reference"] for p in parts}
    if len(references) == 1 and None not in references and not any(math.isnan(p["paired_delta"]) for p in parts):
        keys = ("paired_delta", "paired_ci95_low", "paired_ci95_high")
        cell.update(reference=references.pop(), **dict(zip(keys, mean_interval(*([p[k] for p in parts]
                                                                                 for k in keys)))))
    return cell


def _not_converged(value: Any) -> bool:
    """True only where a training entry says ``converged: false`` (None / NaN: unknown, older records)."""
    return not pd.isna(value) and not bool(value)


def _fold_cell(runs: pd.DataFrame, where: str) -> dict[str, Any]:
    """The cell of one fold and shot from its evaluations (several runs: their mean)."""
    if runs.empty:
        return _empty_cell()
    episodes = sorted(runs["episodes"].unique())
    if len(episodes) > 1:
        listed = ", ".join(f"{r} ({e} episodes)" for r, e in zip(runs["run"], runs["episodes"]))
        raise ValueError(f"{where}: cannot average runs with different episode counts: {listed}; "
                         "re-run them with the same `episodes`, or move one out of the runs folder")
    parts = [{**_empty_cell(), "ours": r.miou, "ci95_low": r.ci95_low, "ci95_high": r.ci95_high, "fbiou": r.fbiou,
              "reference": r.reference, "paired_delta": r.paired_delta, "paired_ci95_low": r.paired_ci95_low,
              "paired_ci95_high": r.paired_ci95_high,
              "status": NOT_CONVERGED if _not_converged(r.converged) else MEASURED}
             for r in runs.itertuples()]
    return _average(parts, len(runs), str(episodes[0]), tuple(sorted(set(runs["run"]))))


def _line_cells(group: pd.DataFrame, table: PaperTable, where: str) -> dict[tuple[int, str], dict[str, Any]]:
    """{(shot, column): cell} of one table line: each fold, the mean over the folds (every fold needed) and
    the FB-IoU averaged over the folds."""
    nfolds = NFOLDS.get(group["benchmark"].iloc[0], 1)
    cells: dict[tuple[int, str], dict[str, Any]] = {}
    for shot in table.shots:
        folds = [_fold_cell(group[(group["nshot"] == shot) & (group["fold"] == f)], f"{where}, {shot}-shot fold {f}")
                 for f in range(nfolds)]
        for f, cell in enumerate(folds):
            cells[(shot, f"fold{f}")] = cell
        episodes = sorted({c["episodes"] for c in folds if c["episodes"] is not None}, key=int)
        mean = _average(folds, max(c["n_runs"] for c in folds), "/".join(map(str, episodes)) or None,
                        tuple(sorted({r for c in folds for r in c["runs"]})))
        cells[(shot, "mean")] = mean
        cells[(shot, "fbiou")] = {**_empty_cell(), **{k: mean[k] for k in ("status", "n_runs", "episodes", "runs")},
                                  "ours": mean["fbiou"]}
    return cells


def _model_cells(group: pd.DataFrame, profiles: pd.DataFrame, table: PaperTable) -> dict[tuple[None, str], dict]:
    """{(None, column): cell} of the shot-independent columns: learnable parameters (from the evaluations, or
    the profiles) and the profiled time, memory and FLOPs."""
    cells = {}
    for column in table.model_columns:
        sources = [group, profiles] if column == "params_M" else [profiles]
        field = "learnable_params" if column == "params_M" else column
        value, used = np.nan, ()
        for frame in sources:
            if not frame.empty and field in frame and frame[field].notna().any():
                value = float(frame[field].dropna().mean()) / (1e6 if column == "params_M" else 1)
                used = tuple(sorted(set(frame.loc[frame[field].notna(), "run"])))
                break
        cells[(None, column)] = {**_empty_cell(), "ours": value, "runs": used, "n_runs": len(used),
                                 "status": NOT_RUN if math.isnan(value) else MEASURED}
    return cells


def _profiles_for(profiles: pd.DataFrame, table: PaperTable, backbone: str, img_size: Any, row_value: Any
                  ) -> pd.DataFrame:
    if profiles.empty or table.model_columns in ((), ("params_M",)):
        return profiles.iloc[0:0]
    keep = (profiles["backbone"] == backbone) & (profiles["img_size"] == img_size)
    for name, default in DEFAULT_VARIANT.items():
        wanted = row_value if name == table.row_field else default
        keep &= profiles[name].apply(lambda v, w=wanted: v == w)
    return profiles[keep]


def _row_index(table: PaperTable, benchmark: str, line: dict[str, Any]) -> int:
    """Position of the paper's row for a line's benchmark layout, backbone and row value (len(rows): none)."""
    return next((i for i, r in enumerate(table.rows) if (r.benchmark, r.backbone) == (benchmark, line["backbone"])
                 and (table.row_field is None or r.row_value == line["row_value"])), len(table.rows))


def build_table(table: PaperTable, evals: pd.DataFrame, profiles: pd.DataFrame) -> pd.DataFrame:
    """The table as one row per line and cell (:data:`CSV_COLUMNS`): the paper's value, ours with its interval,
    ours − paper, the paired difference to the study's reference; lines of the paper without any run keep
    the paper's values with status "no run"."""
    selected = _select(evals, table)
    rows: list[dict[str, Any]] = []
    matched: set[int] = set()
    groups = [] if selected.empty else selected.groupby(list(LINE_KEYS), dropna=False, sort=False)
    for key, group in groups:
        line = dict(zip(LINE_KEYS, key))
        benchmark = group["benchmark"].iloc[0]
        index = _row_index(table, benchmark, line)
        paper = table.rows[index] if line["section"] == PAPER and index < len(table.rows) else None
        matched |= {index} if paper is not None else set()
        method = table.row_labels.get(line["row_value"], paper.label if paper else "HSNet")
        where = f"{table.key}, {line['dataset']} {line['backbone']} {method} {line['img_size']}px"
        cells = {**_line_cells(group, table, where),
                 **_model_cells(group, _profiles_for(profiles, table, line["backbone"], line["img_size"],
                                                     line["row_value"]), table)}
        study = group["study"].iloc[0]
        rows += _rows(table, line, index, method, paper, cells, curves_figure_name(study))
    for index, paper in enumerate(table.rows):
        if index not in matched:
            line = {"section": PAPER, "dataset": paper.benchmark, "backbone": paper.backbone, "pretrained": True,
                    "img_size": 400, "original_size": False, "row_value": paper.row_value}
            cells = {key: _empty_cell() for key in paper.values}
            rows += _rows(table, line, index, table.row_labels.get(paper.row_value, paper.label), paper, cells, None)
    frame = pd.DataFrame(rows, columns=[*CSV_COLUMNS, "_row"])
    cell_order = {key: i for i, key in enumerate(_cell_keys(table))}
    frame["_section"] = frame["section"].map({PAPER: 0, OTHER: 1, SYNTHETIC: 2})
    frame["_cell"] = [cell_order[(s if not pd.isna(s) else None, c)] for s, c in zip(frame["shot"], frame["column"])]
    frame = frame.sort_values(["_section", "_row", "dataset", "backbone", "img_size", "original_size", "_cell"],
                              kind="stable")
    frame["shot"] = frame["shot"].astype("Int64")
    return frame[list(CSV_COLUMNS)].reset_index(drop=True)


def _cell_keys(table: PaperTable) -> list[tuple[int | None, str]]:
    return [(s, c) for s in table.shots for c in table.columns] + [(None, c) for c in table.model_columns]


def _rows(table: PaperTable, line: dict[str, Any], index: int, method: str, paper: PaperRow | None,
          cells: dict[tuple[int | None, str], dict[str, Any]], curves: str | None) -> list[dict[str, Any]]:
    """The CSV rows of one line, one per cell of the table (index: the line's place in the paper's row order)."""
    if not line["pretrained"]:
        method += " (random-init backbone)"
    out = []
    for key in _cell_keys(table):
        cell = cells[key]
        published = paper.values.get(key) if paper is not None else None
        published = np.nan if published is None else float(published)
        out.append({
            "section": line["section"], "benchmark": dataset_label(line["dataset"]), "dataset": line["dataset"],
            "backbone": line["backbone"], "method": method, "img_size": line["img_size"],
            "original_size": line["original_size"], "shot": key[0], "column": key[1], "paper": published,
            **{k: cell[k] for k in ("ours", "ci95_low", "ci95_high", "reference", "paired_delta",
                                    "paired_ci95_low", "paired_ci95_high", "status", "n_runs", "episodes")},
            "delta_vs_paper": cell["ours"] - published if line["section"] == PAPER else np.nan,
            "curves": f"{curves}.png" if cell["status"] == NOT_CONVERGED else None,
            "runs": " ".join(cell["runs"]), "_row": index,
        })
    return out


# -- markdown --------------------------------------------------------------------------------------
def _number(value: float, column: str) -> str:
    return format(value, ".2f" if column in ("time_ms", "memory_gb", "gflops") else ".1f")


def _signed(value: float) -> str:
    """A difference with its sign, "0.0" where it rounds to zero."""
    return "0.0" if round(value, 1) == 0 else f"{value:+.1f}"


def _with_interval(value: float, low: float, high: float, column: str, signed: bool = False) -> str:
    text = _signed(value) if signed else _number(value, column)
    return text if math.isnan(low) else f"{text} [{low:.1f}, {high:.1f}]"


def _ours_text(cell: pd.Series) -> str:
    if cell["status"] == NOT_RUN:
        return "–"
    if cell["status"] == NOT_CONVERGED:
        return "not converged"
    return _with_interval(cell["ours"], cell["ci95_low"], cell["ci95_high"], cell["column"])


def _paired_text(cell: pd.Series) -> str:
    if math.isnan(cell["paired_delta"]):
        return ""
    return _with_interval(cell["paired_delta"], cell["paired_ci95_low"], cell["paired_ci95_high"], "", signed=True)


def _ours_label(cells: pd.DataFrame) -> str:
    """"ours" ("synthetic demo" in that section), with the episodes per cell, "mean of N runs" where cells
    average several runs, and where a training did not converge the figure with its learning curves."""
    measured = cells[(cells["status"] != NOT_RUN) & cells["shot"].notna()]
    label = "synthetic demo" if cells["section"].iloc[0] == SYNTHETIC else "ours"
    episodes = sorted(set(measured["episodes"].dropna()), key=lambda e: int(e.split("/")[0]))
    if episodes:
        label += f", {'/'.join(episodes)} episodes"
    counts = sorted({int(n) for n in measured["n_runs"] if n > 1})
    if counts:
        label += f", mean of {counts[0] if len(counts) == 1 else f'{counts[0]}-{counts[-1]}'} runs"
    curves = sorted(set(measured["curves"].dropna()))
    if curves:
        label += "; not converged: learning curves in " + ", ".join(f"[{c}]({c})" for c in curves)
    return label


def _line_rows(table: PaperTable, cells: pd.DataFrame, refs: dict[str, int]) -> list[list[str]]:
    """The markdown rows of one line: paper, ours, Δ ours − paper, Δ vs the reference (paired)."""
    first = cells.iloc[0]
    img = f"{first['img_size']}" + (" (original size)" if first["original_size"] else "")
    head = [BENCHMARK_LABELS.get(first["dataset"], first["dataset"]), first["backbone"], first["method"], img]
    ran = (cells["status"] != NOT_RUN).any()
    rows = []
    if cells["paper"].notna().any():
        label = "paper" if ran else "paper (not run here)"
        rows.append([label, *["n/a" if math.isnan(v) else _number(v, c) for v, c in
                              zip(cells["paper"], cells["column"])], ""])
    if ran:
        runs = sorted({r for rs in cells["runs"] for r in rs.split()}, key=lambda r: refs[r])
        rows.append([_ours_label(cells), *[_ours_text(c) for _, c in cells.iterrows()],
                     " ".join(f"[{refs[r]}]" for r in runs)])
        deltas = cells["delta_vs_paper"]
        if deltas.notna().any():
            rows.append(["Δ ours − paper", *["" if math.isnan(d) else _signed(d) for d in deltas], ""])
        paired = [_paired_text(c) for _, c in cells.iterrows()]
        if any(paired):
            reference = cells["reference"].dropna().iloc[0]
            rows.append([f"Δ vs {table.row_labels.get(reference, reference)}, paired", *paired, ""])
    return [(head if i == 0 else [""] * len(head)) + row for i, row in enumerate(rows)]


def _line_groups(frame: pd.DataFrame) -> list[pd.DataFrame]:
    """The frame's lines (all cells of one method on one data set, backbone and size), in the frame's order."""
    keys = ["section", "dataset", "backbone", "method", "img_size", "original_size"]
    return [g for _, g in frame.groupby(keys, sort=False, dropna=False)]


def _run_note(number: int, run: pd.Series) -> str:
    parameters = ", ".join(f"{k}={v!r}" for k, v in json.loads(run["parameters"]).items())
    seed = run["seed"]  # a float column once a record lacks its seed
    if seed is None or (isinstance(seed, float) and math.isnan(seed)):
        seed = "none"
    elif isinstance(seed, float) and seed.is_integer():
        seed = int(seed)
    return (f"[{number}] `{run['run']}`: {run['notebook']}, seed {seed}, "
            f"checkpoints {run['checkpoints'] or 'none'}, code {run['code_version']}, device {run['device']}; parameters: {parameters}")


def render_markdown(table: PaperTable, frame: pd.DataFrame, runs: pd.DataFrame) -> str:
    """The table as markdown: per section a table whose lines read as paper / ours / Δ rows (see the module
    docstring), the notes, and the run records behind the ``ours`` rows."""
    keys = _cell_keys(table)
    header = ["data", "backbone", "method", "img", ""] + [
        (f"{shot}-shot " if shot else "") + COLUMN_LABELS[column] for shot, column in keys] + ["runs"]
    used = [r for rs in frame["runs"] for r in rs.split()] if not frame.empty else []
    refs = {run: i + 1 for i, run in enumerate(dict.fromkeys(used))}
    out = [f"### {table.title}", ""]
    for section, part in frame.groupby("section", sort=False):
        out += [SECTION_TEXT[section], "", "| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
        for cells in _line_groups(part):
            out += ["| " + " | ".join(row) + " |" for row in _line_rows(table, cells, refs)]
        out.append("")
    out += [f"Cells: mIoU (%) [bootstrap 95% interval]; – no run; n/a lost from the paper's transcription. "
            f"{table.notes}", ""]
    if refs:
        by_run = runs.set_index("run", drop=False)
        out += ["Run records:", ""] + [f"* {_run_note(n, by_run.loc[r])}" for r, n in refs.items()] + [""]
    return "\n".join(out)


def baselines_table(evals: pd.DataFrame) -> pd.DataFrame:
    """Model vs. the trivial all-foreground / all-background predictions, per scored evaluation."""
    columns = ["benchmark", "study", "fold", "nshot", "backbone", "label", "img_size", "episodes", "miou", "fbiou",
               "all_foreground_miou", "all_foreground_fbiou", "all_background_miou", "all_background_fbiou",
               "margin_miou", "run"]
    if evals.empty or "all_foreground_miou" not in evals:
        return pd.DataFrame(columns=columns)
    rows = evals[evals["all_foreground_miou"].notna()].copy()
    rows["benchmark"] = rows["dataset"].map(dataset_label)
    rows["margin_miou"] = rows["miou"] - rows[["all_foreground_miou", "all_background_miou"]].max(axis=1)
    return rows[columns].sort_values(["benchmark", "study", "label", "nshot", "fold"]).reset_index(drop=True)


# -- figures ---------------------------------------------------------------------------------------
def _pyplot():
    import matplotlib
    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    return plt


def _save(fig, title: str, path: Path) -> Path:
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    _pyplot().close(fig)
    return path


def _bars(ax, data: dict[str, pd.DataFrame], columns: list[str], title: str) -> None:
    """Grouped bars (one group per column, one bar per variant) with their intervals; "n.c." marks a variant
    that did not converge. data: label -> frame with ours, ci95_low, ci95_high, status per column."""
    if not any((d["status"] != NOT_RUN).any() for d in data.values()):
        ax.text(0.5, 0.5, "no run", ha="center", va="center", transform=ax.transAxes, fontsize=12, color="grey")
    width = 0.8 / max(len(data), 1)
    x = np.arange(len(columns))
    for i, (label, d) in enumerate(data.items()):
        xs = x + (i - (len(data) - 1) / 2) * width
        err = np.abs(np.vstack([d["ours"] - d["ci95_low"], d["ci95_high"] - d["ours"]]))
        ax.bar(xs, d["ours"], width, yerr=np.nan_to_num(err) if np.isfinite(err).any() else None, capsize=2,
               label=label)
        for xi, status in zip(xs, d["status"]):
            if status == NOT_CONVERGED:
                ax.text(xi, 2, "n.c.", ha="center", va="bottom", fontsize=6, rotation=90)
    ax.set_xticks(x, [COLUMN_LABELS[c] for c in columns])
    ax.set_ylabel("mIoU (%)")
    ax.set_ylim(0, 100)
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.1), ncol=len(data), frameon=False)


def ablation_figure(table: PaperTable, frame: pd.DataFrame, path: Path) -> Path | None:
    """Bars per fold and mean for each variant: the paper's panel, then one panel per data set, backbone and
    image size of our runs."""
    ours = frame[frame["status"] != NOT_RUN]
    if ours.empty:
        return None
    columns = list(table.columns)
    mean_only = {"ci95_low": np.nan, "ci95_high": np.nan, "status": MEASURED}
    panels = [("paper: " + ", ".join(sorted({f"{BENCHMARK_LABELS[r.benchmark]} {r.backbone}" for r in table.rows})),
               lambda shot: {r.label: pd.DataFrame([{"ours": r.values.get((shot, c)) or np.nan, **mean_only}
                                                    for c in columns]) for r in table.rows})]
    for (dataset, backbone, img, original), group in frame.groupby(
            ["dataset", "backbone", "img_size", "original_size"], sort=False):
        if not (group["status"] != NOT_RUN).any():
            continue
        size = f"{img}px" + (", original size" if original else "")
        panels.append((f"ours: {dataset}, {backbone}, {size}", lambda shot, g=group: {
            m.replace(" (random-init backbone)", ""): cells.set_index("column").loc[columns].reset_index()
            for m, cells in g[g["shot"] == shot].groupby("method", sort=False)}))
    plt = _pyplot()
    fig, axes = plt.subplots(len(panels), len(table.shots), figsize=(5.5 * len(table.shots), 3.6 * len(panels)),
                             squeeze=False)
    for r, (title, data) in enumerate(panels):
        for c, shot in enumerate(table.shots):
            _bars(axes[r, c], data(shot), columns, f"{title}, {shot}-shot")
    return _save(fig, table.title, path)


def _curves(ax, trainings: pd.DataFrame) -> None:
    """Validation (solid) and training (dashed) mIoU per epoch of each training, one colour per label."""
    for i, t in enumerate(trainings.itertuples()):
        history = pd.DataFrame(t.history)
        color = f"C{i}"
        suffix = "" if pd.isna(getattr(t, "converged", np.nan)) or t.converged else " (not converged)"
        if "train_miou" in history:
            ax.plot(history["epoch"], history["train_miou"], color=color, linestyle="--", label=f"{t.label} train")
        ax.plot(history["epoch"], history["val_miou"], color=color, marker=".", label=f"{t.label} val{suffix}")
    ax.set_xlabel("epoch")
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.set_ylabel("mIoU (%)")
    ax.legend(fontsize=6)


def curves_figure(trainings: pd.DataFrame, study: str, path: Path) -> Path | None:
    """Learning curves of one study's trainings (from each training entry's per-epoch ``history``): one panel per
    data set, backbone, image size and fold, one colour per variant. Fig. 10 is the "finetune" study's."""
    rows = trainings[trainings["study"] == study] if not trainings.empty else trainings
    if rows.empty:
        return None
    keys = [k for k in ("dataset", "backbone", "img_size", "fold") if k in rows]  # older entries lack img_size
    groups = list(rows.groupby(keys, sort=True))
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(groups), figsize=(4.2 * len(groups), 3.4), squeeze=False)
    for ax, (key, group) in zip(axes[0], groups):
        _curves(ax, group)
        ax.set_title(", ".join(f"{k.replace('img_size', 'px')} {v}" for k, v in zip(keys, key)), fontsize=8)
    title = {"finetune": "Figure 10: learning curves, frozen vs. fine-tuned backbone"}.get(
        study, f"Learning curves of the {study} study")
    return _save(fig, title, path)


def block_layers_figure(evals: pd.DataFrame, trainings: pd.DataFrame, path: Path) -> Path | None:
    """Fig. 9: mIoU (mean over the folds run, with its interval) and learnable parameters vs. 4D layers per block,
    beside the validation curves of the variants' trainings."""
    rows = evals[evals["study"] == "block_layers"] if not evals.empty else evals
    if rows.empty or rows["block_layers"].nunique() < 2:
        return None
    groups = list(rows.groupby(["dataset", "backbone", "img_size"], sort=False))
    plt = _pyplot()
    fig, axes = plt.subplots(len(groups), 2, figsize=(11, 3.6 * len(groups)), squeeze=False)
    for (ax, curve_ax), ((dataset, backbone, img), g) in zip(axes, groups):
        for shot, gs in g.groupby("nshot"):
            points = []
            for layers, gl in gs.groupby("block_layers"):
                if not gl["converged"].map(_not_converged).any():
                    points.append((layers, *mean_interval(gl["miou"], gl["ci95_low"], gl["ci95_high"])))
            x, y, lo, hi = (np.array(v, dtype=float) for v in zip(*points)) if points else ([],) * 4
            ax.errorbar(x, y, yerr=np.nan_to_num(np.abs([y - lo, hi - y])), marker="o", capsize=3,
                        label=f"{shot}-shot mIoU")
        ax.set_xlabel("4D layers per block (a missing point: not converged)")
        ax.set_ylabel("mIoU (%), mean over the folds run")
        ax.set_xticks(sorted(g["block_layers"].unique()))
        size = g.groupby("block_layers")["learnable_params"].first() / 1e6
        twin = ax.twinx()
        twin.bar(size.index, size.values, alpha=0.2, color="grey", label="learnable params (M)")
        twin.set_ylabel("learnable params (M)")
        ax.set_title(f"{dataset}, {backbone}, {img}px", fontsize=8)
        ax.legend(fontsize=7, loc="lower right")
        runs = trainings[(trainings["study"] == "block_layers") & (trainings["dataset"] == dataset)
                         & (trainings["backbone"] == backbone) & (trainings["img_size"] == img)] \
            if not trainings.empty else trainings
        if not runs.empty:
            _curves(curve_ax, runs)
        curve_ax.set_title(f"learning curves: {dataset}, {backbone}, {img}px", fontsize=8)
    return _save(fig, "Figure 9: layers per building block (the paper gives no numbers)", path)


# -- output ----------------------------------------------------------------------------------------
def markdown_table(frame: pd.DataFrame, floatfmt: str = ".1f") -> str:
    """A frame as a GitHub markdown table (floats formatted, NaN as "–")."""
    def cell(value: Any) -> str:
        if isinstance(value, float):
            return "–" if math.isnan(value) else format(value, floatfmt)
        return str(value)
    lines = ["| " + " | ".join(map(str, frame.columns)) + " |", "|" + " --- |" * len(frame.columns)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join(lines) + "\n"


def _baselines_markdown(frame: pd.DataFrame) -> str:
    if frame.empty:
        return "No evaluation with trivial baselines: no run.\n"
    return markdown_table(frame.drop(columns=["run"]))


def write_results(runs_dir: str | Path, out_dir: str | Path) -> dict[str, Any]:
    """Write every table, figure, runs.csv and README.md into out_dir; returns {"tables": {key: frame},
    "figures": {name: path or None}, "data": the frames of :func:`collect`}."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    data = collect(runs_dir)
    written: dict[str, Any] = {"tables": {}, "figures": {}}
    markdown: dict[str, str] = {}
    for key, table in TABLES.items():
        frame = build_table(table, data["evaluations"], data["profiles"])
        frame.to_csv(out_dir / f"{key}.csv", index=False, float_format="%.6g")
        markdown[key] = render_markdown(table, frame, data["runs"])
        (out_dir / f"{key}.md").write_text(markdown[key])
        written["tables"][key] = frame
        if table.figure:
            written["figures"][table.figure] = ablation_figure(table, frame, out_dir / f"{table.figure}.png")
    baselines = baselines_table(data["evaluations"])
    baselines.to_csv(out_dir / "baselines.csv", index=False, float_format="%.6g")
    (out_dir / "baselines.md").write_text(_baselines_markdown(baselines))
    written["tables"]["baselines"] = baselines
    data["runs"].to_csv(out_dir / "runs.csv", index=False)
    trainings = data["trainings"]
    written["figures"]["fig9"] = block_layers_figure(data["evaluations"], trainings, out_dir / "fig9.png")
    studies = ["finetune"] + sorted(set(trainings["study"]) - {"finetune", "block_layers"} if not trainings.empty
                                    else [])
    for study in studies:
        name = curves_figure_name(study)
        written["figures"][name] = curves_figure(trainings, study, out_dir / f"{name}.png")
    stale = {p.stem for p in out_dir.glob("curves_*.png")} - set(written["figures"])
    for name in stale | {n for n, p in written["figures"].items() if p is None}:
        (out_dir / f"{name}.png").unlink(missing_ok=True)  # a stale figure must not outlive its runs
    (out_dir / "README.md").write_text(readme(runs_dir, data, written, markdown, baselines))
    written["data"] = data
    return written


def _scale(frame: pd.DataFrame) -> str:
    """Which sections of a table have runs, e.g. "synthetic demo (2 lines)"; "no run" if none."""
    ran = frame[frame["status"] != NOT_RUN]
    if ran.empty:
        return "no run"
    lines = {section: len(_line_groups(part)) for section, part in ran.groupby("section", sort=False)}
    return ", ".join(f"{section} ({n} line{'s' if n > 1 else ''})" for section, n in lines.items())


READING = """\
## How to read the tables

Each table keeps the paper's columns (fold 0-3, their mean, FB-IoU; Table 4 adds the model's size,
time, memory and FLOPs). A line is one method on one data set, backbone, image size (`img`) and
scoring size; in markdown it reads as rows:

* `paper`: the published value (`n/a`: lost from the paper's markdown transcription, see
  `hsnetlib.paper.MISSING`); `paper (not run here)`: no run of ours behind the line at all.
* `ours` (`synthetic demo` in the demo's tables): our mIoU (%) with its **bootstrap 95% interval**
  in brackets (resampling the test episodes of the run; `hsnetlib.metrics.bootstrap_miou`). The row label says how many test
  episodes each cell scored and, where a cell averages several runs (e.g. seeds), "mean of N runs".
  Runs are only averaged when they scored the same number of episodes (otherwise the command stops
  and names them); runs at different image sizes are separate lines. The interval of a mean (over
  runs, or over the folds in `mean`) combines the individual intervals as independent estimates
  (half-widths in quadrature, divided by their count). `mean` and `FB-IoU` need every fold.
  `–`: no run. `not converged`: that variant's training never left the all-background solution
  (its training entry says `converged: false`), so its mIoU would mislead; the row names the figure
  with its learning curves. `[1] [2]` name the run records behind the row, listed under the table
  (notebook, seed, checkpoint, code version, parameters) and in `runs.csv`.
* `Δ ours − paper` (paper-protocol lines only): read it against the interval of `ours`; a
  difference inside the interval is not a difference.
* `Δ vs <reference>, paired` (ablation tables): the variant's mIoU minus its study's reference
  variant (the paper's own choice, e.g. `C_p (ours)`), both scored on the very same test episodes,
  with the **paired bootstrap 95% interval** (resampling the shared episodes for both at once). It
  is much tighter than the two separate intervals; an interval that excludes 0 is a difference the
  episodes support.

Lines of the **synthetic demo** (generated images, randomly initialised backbone, small images and
budgets: `grids/demo.toml`, `make demo`) are in their own table under each paper table and are
**never compared with the paper**: they show that each notebook runs end to end and that a trained
model beats trivial predictions on held-out classes, not the paper's numbers. Lines of the **paper
protocol** come from `grids/paper.toml` (real data, ImageNet backbones, 400 px, GPU).

The CSV files hold the same numbers, one row per line and cell: `section`, `benchmark`, `dataset`,
`backbone`, `method`, `img_size`, `original_size`, `shot`, `column`, `paper`, `ours`, `ci95_low`,
`ci95_high`, `delta_vs_paper`, `reference`, `paired_delta`, `paired_ci95_low`, `paired_ci95_high`,
`status` (`measured`, `no run`, `not converged`), `n_runs`, `episodes`, `curves` (the learning-curve
figure of a non-converged cell) and `runs` (run folders, see `runs.csv`).
"""


def readme(runs_dir: str | Path, data: dict[str, pd.DataFrame], written: dict[str, Any], markdown: dict[str, str],
           baselines: pd.DataFrame) -> str:
    """README.md of the results folder: provenance, one line per file (what, produced by, scale), how to read
    the tables, and the tables rendered."""
    runs, trainings = data["runs"], data["trainings"]
    versions = sorted(set(runs["code_version"].dropna())) if not runs.empty else []
    runs_path = Path(runs_dir).resolve()
    if runs_path.is_relative_to(project_root()):
        runs_path = runs_path.relative_to(project_root())
    lines = [
        "# Results",
        "",
        "Generated by `python -m hsnetlib.results` (notebook `11_results.ipynb`) from the run records "
        f"(`metrics.json`) under `{runs_path.as_posix()}`: {len(runs)} run(s), code version(s) "
        f"{', '.join(versions) or 'none'}. Do not edit by hand: re-run the grid and this command.",
        "",
        "Grids: `grids/demo.toml` (`make demo`: synthetic benchmark, CPU, small scale) and `grids/paper.toml` "
        "(the paper's full protocol: real data, GPU). Each run folder (`runs/<grid>/<run>/`) holds the executed "
        "notebook, `params.json` and `metrics.json` (parameters, seed, checkpoint sha256, code and library "
        "versions, device); [runs.csv](runs.csv) lists them all.",
        "",
        "## Files",
        "",
        "| file | what | produced by | scale of our runs |",
        "| --- | --- | --- | --- |",
    ]
    for key, table in TABLES.items():
        lines.append(f"| [{key}.md]({key}.md), [{key}.csv]({key}.csv) | {table.title} | {SOURCES[key]} | "
                     f"{_scale(written['tables'][key])} |")
    lines.append(f"| [baselines.md](baselines.md), [baselines.csv](baselines.csv) | trained model vs. trivial "
                 f"all-foreground / all-background predictions on held-out classes | {SOURCES['baselines']} | "
                 f"{len(baselines)} evaluation(s) |")
    what = {"fig6": "Figure 6 (= Table A3): bars with intervals", "fig7": "Figure 7 (= Table A4): bars with intervals",
            "fig9": FIGURES_WITHOUT_NUMBERS["fig9"], "fig10": FIGURES_WITHOUT_NUMBERS["fig10"]}
    for name, path in written["figures"].items():
        study = name.removeprefix("curves_")
        link = f"[{name}.png]({name}.png)" if path is not None else f"{name}.png: no run"
        source = SOURCES.get(name) or ", ".join(sorted(set(trainings.loc[trainings["study"] == study, "notebook"])))
        lines.append(f"| {link} | {what.get(name, f'learning curves of the {study} study (per-epoch history)')} | "
                     f"{source} | |")
    lines += [
        "",
        READING,
        "## Trained model vs. trivial baselines",
        "",
        _baselines_markdown(baselines),
        "## Tables",
        "",
        *[markdown[k] for k in TABLES],
    ]
    return "\n".join(lines)


def main(argv: Iterable[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m hsnetlib.results", description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", default="runs", help="folder searched for run records (default: runs/)")
    parser.add_argument("--out", default="results", help="output folder (default: results/)")
    args = parser.parse_args(list(argv) if argv is not None else None)
    try:
        written = write_results(args.runs, args.out)
    except (FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    data = written["data"]
    print(f"{len(data['runs'])} run records from {args.runs} -> {args.out}/ "
          f"({', '.join(sorted(written['tables']))}; figures: "
          f"{', '.join(k for k, v in written['figures'].items() if v is not None) or 'none'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
