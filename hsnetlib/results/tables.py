"""Building the tables: our runs in the cells of the paper's tables, beside the published numbers.

:func:`build_table` turns the evaluations of :func:`hsnetlib.results.collect.collect` into one row
per table line and cell (:data:`CSV_COLUMNS`). A *line* is one method of the table (a backbone and
the value of the table's model option) on one data set, image size and scoring size. Lines are
sorted into sections: the paper's setting (a benchmark with published numbers, an ImageNet
backbone) is compared with the published numbers; the others (a random backbone, a benchmark
without paper tables) and the synthetic demo never are. A training that never left the
all-background solution makes its cells "not converged" (its training entry says so, or the
checkpoint an evaluation scored: see :mod:`hsnetlib.results.collect`); a cell without a run is
"no run".
Benchmarks without paper tables get a table of their own (:func:`benchmark_tables`).
"""
from __future__ import annotations

import math
import re
from typing import Any, Iterable

import numpy as np
import pandas as pd

from hsnetlib.model import PAPER_IMG_SIZE  # the size of a published line; an expected line has none
from hsnetlib.results import registries
from hsnetlib.results.paper import PAPER_BACKBONES, TABLES, PaperRow, PaperTable, backbones_table
from hsnetlib.suite.records import not_converged

LINE_KEYS = ("section", "dataset", "backbone", "pretrained", "img_size", "original_size", "row_value")
PAPER, OTHER, SYNTHETIC = "paper protocol", "not the paper's setting", "synthetic demo"
SECTIONS = (PAPER, OTHER, SYNTHETIC)
# Columns of a table's CSV: one row per line and cell.
CSV_COLUMNS = (
    "section", "benchmark", "dataset", "backbone", "method", "img_size", "original_size", "shot", "column",
    "paper", "ours", "ci95_low", "ci95_high", "delta_vs_paper", "reference", "paired_delta", "paired_ci95_low",
    "paired_ci95_high", "status", "n_runs", "episodes", "curves", "runs",
)
NOT_RUN, MEASURED, NOT_CONVERGED = "no run", "measured", "not converged"
# The figure with the learning curves of each study's trainings (see :func:`curves_figure_name`).
CURVE_FIGURES = {"finetune": "fig10", "block_layers": "fig9"}


def curves_figure_name(study: str) -> str:
    """The figure (file stem) with the learning curves of a study's trainings."""
    return CURVE_FIGURES.get(study, f"curves_{study}")


def dataset_label(dataset: str) -> str:
    """A data set's display label: the benchmark's, or the synthetic demo's name saying what it is not."""
    if dataset.startswith("synthetic"):
        return f"{dataset} (synthetic demo: not the paper's benchmark)"
    return registries.benchmark(dataset).label


def section_of(dataset: str, pretrained: bool) -> str:
    """Which part of a table a line belongs to: only the paper's setting is compared with the paper."""
    if dataset.startswith("synthetic"):
        return SYNTHETIC
    return PAPER if registries.benchmark(dataset).paper_tables and pretrained else OTHER


def all_tables() -> dict[str, PaperTable]:
    """The paper's tables and "HSNet across backbones" (one line per registered backbone the paper lacks)."""
    return {**TABLES, "backbones": backbones_table(registries.new_backbones(set(PAPER_BACKBONES)))}


def benchmark_tables(evals: pd.DataFrame) -> dict[str, PaperTable]:
    """A table per evaluated benchmark without paper tables (never compared with published numbers): a line per
    study variant (its label), a column per fold, their mean and FB-IoU."""
    if evals.empty:
        return {}
    tables = {}
    for name, group in evals.groupby("benchmark", sort=True):
        info = registries.benchmark(name)
        if info.paper_tables:
            continue
        nfolds = info.nfolds or int(group["fold"].max()) + 1
        key = "benchmark-" + re.sub(r"[^\w.-]", "_", name)
        tables[key] = PaperTable(
            key=key, title=f"{info.label}: mIoU and FB-IoU (no published numbers)", benchmarks=(name,),
            shots=tuple(sorted(int(s) for s in group["nshot"].unique())), ignore_label=None, rows=(),
            columns=(*(f"fold{f}" for f in range(nfolds)), "mean", "fbiou"), row_field="label", studies=None,
            paper_backbones_only=False,
            source="the notebooks that evaluated it: " + ", ".join(sorted(set(group["notebook"].dropna()))),
            notes=f"{info.label} has no published numbers: ours only.")
    return tables


def _select(evals: pd.DataFrame, table: PaperTable) -> pd.DataFrame:
    """Evaluations in the table's setting: its benchmarks (real or synthetic in the same layout) trained on the
    table's training benchmark, its studies, the other model options at their defaults and, on PASCAL
    layouts, the table's ignore-label choice."""
    if evals.empty:
        return evals
    keep = np.array(evals["benchmark"].isin(table.benchmarks), dtype=bool)
    if table.paper_backbones_only:
        keep = keep & evals["backbone"].isin(PAPER_BACKBONES).to_numpy()
    trained_on = evals["benchmark"] if table.train_benchmark is None else table.train_benchmark
    keep = keep & (evals["train_benchmark"] == trained_on).to_numpy()
    values = evals[table.row_field] if table.row_field else evals["study"]
    if table.studies is not None:
        studies = table.studies
        keep = keep & np.array([study in studies and (studies[study] is None or value in studies[study])
                          for study, value in zip(evals["study"], values)], dtype=bool)
        for name, default in registries.variant_defaults().items():
            if name != table.row_field:
                keep = keep & evals[name].apply(lambda v, d=default: v == d).to_numpy(dtype=bool)
    if table.ignore_label is not None and "ignore_label" in evals:
        keep = keep & ((evals["benchmark"] != "pascal") | (evals["ignore_label"] == table.ignore_label)).to_numpy()
    selected = evals[keep].copy()
    selected["row_value"] = selected[table.row_field] if table.row_field else None
    selected["section"] = [section_of(d, p) for d, p in zip(selected["dataset"], selected["pretrained"])]
    if table.layout == "targets":  # a line is one model on every target: named by its training data
        synthetic = selected["dataset"].str.startswith("synthetic")
        selected["dataset"] = np.where(synthetic, "synthetic-" + selected["train_benchmark"],
                                       selected["train_benchmark"])
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
    if not len(v):
        return (math.nan,) * 3
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


def _fold_cell(runs: pd.DataFrame, where: str) -> dict[str, Any]:
    """The cell of one fold (or target) and shot from its evaluations (several runs: their mean)."""
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
              "status": NOT_CONVERGED if not_converged(r.converged) else MEASURED}
             for r in runs.itertuples()]
    return _average(parts, len(runs), str(episodes[0]), tuple(sorted(set(runs["run"]))))


def fold_label(column: str) -> str | None:
    """"fold 0" for ``fold0``; None for a column that is no fold."""
    return f"fold {column[4:]}" if column.startswith("fold") and column[4:].isdigit() else None


def _parts(group: pd.DataFrame, table: PaperTable) -> list[tuple[str, pd.Series]]:
    """(column, which rows of the line score it) of every fold, or of every target of a "targets" table."""
    if table.layout == "targets":
        return [(target, group["benchmark"] == target) for target in table.benchmarks]
    benchmark = group["benchmark"].iloc[0]
    nfolds = registries.benchmark(benchmark).nfolds or int(group["fold"].max()) + 1
    return [(f"fold{f}", group["fold"] == f) for f in range(nfolds)]


def _line_cells(group: pd.DataFrame, table: PaperTable, where: str) -> dict[tuple[int, str], dict[str, Any]]:
    """{(shot, column): cell} of one table line: each fold (or target), their mean (every one needed) and the
    FB-IoU averaged over them."""
    cells: dict[tuple[int, str], dict[str, Any]] = {}
    for shot in table.shots:
        parts = [(column, _fold_cell(group[rows & (group["nshot"] == shot)],
                                     f"{where}, {shot}-shot {fold_label(column) or column}"))
                 for column, rows in _parts(group, table)]
        cells.update({(shot, column): cell for column, cell in parts})
        folds = [cell for _, cell in parts]
        episodes = sorted({c["episodes"] for c in folds if c["episodes"] is not None}, key=int)
        mean = _average(folds, max(c["n_runs"] for c in folds), "/".join(episodes) or None,
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
    for name, default in registries.variant_defaults().items():
        wanted = row_value if name == table.row_field else default
        keep = keep & profiles[name].apply(lambda v, w=wanted: v == w)
    return profiles[keep]


def _row_index(table: PaperTable, benchmark: str, line: dict[str, Any]) -> int:
    """Position of the paper's HSNet row for a line's benchmark, backbone and row value (len(rows): none)."""
    return next((i for i, r in enumerate(table.rows) if not r.reference
                 and (r.benchmark, r.backbone) == (benchmark, line["backbone"])
                 and (table.row_field is None or r.row_value == line["row_value"])), len(table.rows))


def _method(table: PaperTable, row_value: Any, paper: PaperRow | None) -> str:
    if row_value in table.row_labels:
        return table.row_labels[row_value]
    if paper is not None:
        return paper.label
    return str(row_value) if table.row_field == "label" else "HSNet"


def build_table(table: PaperTable, evals: pd.DataFrame, profiles: pd.DataFrame,
                curve_studies: Iterable[str] | None = None) -> pd.DataFrame:
    """The table as one row per line and cell (:data:`CSV_COLUMNS`): the paper's value, ours with its interval,
    ours − paper, the paired difference to the study's reference; lines of the paper without any run keep
    the paper's values with status "no run". A not-converged cell names its study's learning-curve figure when
    the study is one of `curve_studies` (those with trainings among the runs; None: every study)."""
    drawn = None if curve_studies is None else set(curve_studies)
    selected = _select(evals, table)
    rows: list[dict[str, Any]] = []
    matched: set[int] = set()
    groups = [] if selected.empty else selected.groupby(list(LINE_KEYS), dropna=False, sort=False)
    for key, group in groups:
        line = dict(zip(LINE_KEYS, key))
        benchmark = group["train_benchmark" if table.layout == "targets" else "benchmark"].iloc[0]
        index = _row_index(table, benchmark, line)
        paper = table.rows[index] if line["section"] == PAPER and index < len(table.rows) else None
        matched |= {index} if paper is not None else set()
        method = _method(table, line["row_value"], paper)
        where = f"{table.key}, {line['dataset']} {line['backbone']} {method} {line['img_size']}px"
        cells = {**_line_cells(group, table, where),
                 **_model_cells(group, _profiles_for(profiles, table, line["backbone"], line["img_size"],
                                                     line["row_value"]), table)}
        study = group["study"].iloc[0]
        rows += _rows(table, line, index, method, paper, cells,
                      curves_figure_name(study) if drawn is None or study in drawn else None)
    for index, paper in enumerate(table.rows):
        if index not in matched:
            line = {"section": PAPER, "dataset": paper.benchmark, "backbone": paper.backbone, "pretrained": True,
                    "img_size": PAPER_IMG_SIZE if paper.values else None, "original_size": False,
                    "row_value": paper.row_value}
            cells = {key: _empty_cell() for key in cell_keys(table)}
            rows += _rows(table, line, index, _method(table, paper.row_value, paper), paper, cells, None)
    frame = pd.DataFrame(rows, columns=[*CSV_COLUMNS, "_row"])
    cell_order = {key: i for i, key in enumerate(cell_keys(table))}
    frame["_section"] = frame["section"].map({s: i for i, s in enumerate(SECTIONS)})
    frame["_cell"] = [cell_order[(s if not pd.isna(s) else None, c)] for s, c in zip(frame["shot"], frame["column"])]
    frame = frame.sort_values(["_section", "_row", "dataset", "backbone", "img_size", "original_size", "_cell"],
                              kind="stable")
    frame["shot"] = frame["shot"].astype("Int64")
    return frame[list(CSV_COLUMNS)].reset_index(drop=True)


def cell_keys(table: PaperTable) -> list[tuple[int | None, str]]:
    return [(s, c) for s in table.shots for c in table.columns] + [(None, c) for c in table.model_columns]


def _rows(table: PaperTable, line: dict[str, Any], index: int, method: str, paper: PaperRow | None,
          cells: dict[tuple[int | None, str], dict[str, Any]], curves: str | None) -> list[dict[str, Any]]:
    """The CSV rows of one line, one per cell of the table (index: the line's place in the paper's row order)."""
    if not line["pretrained"]:
        method += " (random-init backbone)"
    out = []
    for key in cell_keys(table):
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
            "curves": f"{curves}.png" if cell["status"] == NOT_CONVERGED and curves is not None else None,
            "runs": " ".join(cell["runs"]), "_row": index,
        })
    return out


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
