"""Gather every run's metrics.json into the paper's tables and figures, beside the published numbers.

    python -m hsnetlib.results --runs runs/ --out results/

reads every ``metrics.json`` written by :func:`hsnetlib.suite.write_run_record` under ``--runs``
and writes into ``--out``:

* ``table1.csv`` .. ``tableA4.csv`` (and ``.md``): the layout of the paper's Tables 1-4 and A1-A4
  (:data:`hsnetlib.paper.TABLES`). One line per (benchmark, backbone, row of the table, image
  size); per shot and column three values side by side: ours (``1shot_fold0``), the paper's
  (``1shot_fold0_paper``) and ours minus the paper's (``1shot_fold0_diff``). A cell with no run
  behind it is empty (NaN) and the line's ``status`` lists it as "no run"; ``mean`` and ``fbiou``
  are averages over the folds and stay empty until every fold has a run. Nothing is filled in by
  hand. Lines of the synthetic benchmark (``benchmark`` = "synthetic-...") or of a randomly
  initialised backbone never get paper numbers: they are not the paper's setting.
* ``baselines.csv`` (and ``.md``): every evaluation that carries trivial baselines: the model's
  mIoU / FB-IoU next to all-foreground and all-background predictions scored on the same episodes
  with the same meter, and the margin over the better baseline.
* ``fig6.png``, ``fig7.png``: the hypercorrelation and pyramid ablations (Tables A3 / A4) as bars,
  the paper's panel apart from ours (one panel per data set, backbone and image size);
  ``fig9.png``: mIoU and model size vs. 4D layers per block; ``fig10.png``: training / validation
  mIoU per epoch, frozen vs. fine-tuned backbone, per fold. A figure without any run is not drawn (README says "no run").
* ``README.md``: what each file holds, which notebook and grid produce it, and the tables rendered.

Sections of metrics.json read here (written by :mod:`hsnetlib.experiments`):
``evaluations`` (one dict per scored model: study, label, benchmark, dataset, synthetic, fold, nshot,
ignore_label, img_size, original_size, episodes, model (HSNetConfig), learnable_params, miou, fbiou,
ci95, baselines), ``profiles`` (model, img_size, nshot, device, learnable_params, time_ms,
memory_gb, gflops) and ``trainings`` (study, model, benchmark, dataset, fold, history: one dict per
epoch with train_miou / val_miou ...). The ``study`` ("main" or an ablation) decides which table an
evaluation fills (:data:`TABLE_STUDIES`): an ablation's reference variant stays in its ablation's table.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import pandas as pd

from hsnetlib.paper import BENCHMARK_LABELS, COLUMN_LABELS, FIGURES_WITHOUT_NUMBERS, TABLES, PaperTable
from hsnetlib.suite import project_root

NFOLDS = {"pascal": 4, "coco": 4, "fss": 1, "folder": 1}
DEFAULT_VARIANT: dict[str, Any] = {"hypercorrelation": "full", "pyramid": (1, 2, 3), "kernel": "center_pivot",
                                   "block_layers": 3, "support_masking": True, "finetune_backbone": False}
MODEL_FIELDS = ("backbone", "weights", *DEFAULT_VARIANT)
GROUP_KEYS = ("dataset", "backbone", "pretrained", "img_size", "original_size", "row_value")
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
    "fig9": "06_ablation_block_layers.ipynb",
    "fig10": "07_ablation_finetune.ipynb (the training histories of both variants, per fold)",
    "baselines": "02_evaluate.ipynb (and every notebook that scores the trivial baselines)",
}


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


def _common(run: str, record: dict[str, Any]) -> dict[str, Any]:
    provenance = record.get("provenance", {})
    return {"run": run, "notebook": record.get("notebook"), "code_version": provenance.get("code_version"),
            "device": provenance.get("device")}


def collect(runs_dir: str | Path) -> dict[str, pd.DataFrame]:
    """Every evaluation, profile and training of the runs, one frame each (model options as columns)."""
    rows: dict[str, list[dict[str, Any]]] = {"evaluations": [], "profiles": [], "trainings": []}
    for run, record in read_records(runs_dir):
        for section in rows:
            for entry in record.get(section, []):
                row = {**_common(run, record), "study": "main",
                       **{k: v for k, v in entry.items() if k != "model"}, **_model_columns(entry.get("model"))}
                if section == "evaluations":
                    for name, scores in (entry.get("baselines") or {}).items():
                        row[f"{name}_miou"], row[f"{name}_fbiou"] = scores["miou"], scores["fbiou"]
                rows[section].append(row)
    return {k: pd.DataFrame(v) for k, v in rows.items()}


# -- tables ----------------------------------------------------------------------------------------
def dataset_label(dataset: str) -> str:
    if dataset in BENCHMARK_LABELS:
        return BENCHMARK_LABELS[dataset]
    return f"{dataset} (synthetic demo: not the paper's benchmark)" if dataset.startswith("synthetic") else dataset


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
    return selected


def _cell_key(shot: int | None, column: str) -> str:
    return column if shot is None else f"{shot}shot_{column}"


def _our_values(group: pd.DataFrame, profiles: pd.DataFrame, table: PaperTable, benchmark: str
                ) -> tuple[dict[str, float], list[str], list[str]]:
    """Our value per cell of one table line, the cells with no run, and the runs used."""
    values: dict[str, float] = {}
    missing: list[str] = []
    nfolds = NFOLDS.get(benchmark, 1)
    for shot in table.shots:
        runs = group[group["nshot"] == shot] if not group.empty else group
        per_fold = runs.groupby("fold")[["miou", "fbiou"]].mean() if not runs.empty else pd.DataFrame()
        complete = len(per_fold) == nfolds and set(per_fold.index) == set(range(nfolds))
        for column in table.columns:
            if column.startswith("fold"):
                fold = int(column[4:])
                value = per_fold["miou"].get(fold, np.nan) if not per_fold.empty else np.nan
            elif column == "mean":
                value = per_fold["miou"].mean() if complete else np.nan
            else:  # fbiou
                value = per_fold["fbiou"].mean() if complete else np.nan
            values[_cell_key(shot, column)] = float(value)
            if math.isnan(value):
                missing.append(f"{shot}-shot {COLUMN_LABELS[column]}")
    for column in table.model_columns:
        value = np.nan
        if column == "params_M" and not group.empty and group["learnable_params"].notna().any():
            value = group["learnable_params"].dropna().iloc[0] / 1e6
        elif not profiles.empty:
            value = profiles[column].mean() if column in profiles else np.nan
        if column == "params_M" and math.isnan(value) and not profiles.empty:
            value = profiles["learnable_params"].dropna().iloc[0] / 1e6
        values[column] = float(value)
        if math.isnan(value):
            missing.append(COLUMN_LABELS[column])
    used = sorted(set(group["run"]) | (set(profiles["run"]) if not profiles.empty else set()))
    return values, missing, used


def _profiles_for(profiles: pd.DataFrame, table: PaperTable, backbone: str, img_size: Any, row_value: Any
                  ) -> pd.DataFrame:
    if profiles.empty or not table.model_columns or table.model_columns == ("params_M",):
        return profiles.iloc[0:0]
    keep = (profiles["backbone"] == backbone) & (profiles["img_size"] == img_size)
    for name, default in DEFAULT_VARIANT.items():
        wanted = row_value if name == table.row_field else default
        keep &= profiles[name].apply(lambda v, w=wanted: v == w)
    return profiles[keep]


def build_table(table: PaperTable, evals: pd.DataFrame, profiles: pd.DataFrame) -> pd.DataFrame:
    """The table in the paper's layout: our values, the paper's and the difference, side by side."""
    selected = _select(evals, table)
    lines: list[dict[str, Any]] = []
    groups = [] if selected.empty else list(selected.groupby(list(GROUP_KEYS), dropna=False, sort=False))
    matched_paper = set()
    for key, group in groups:
        info = dict(zip(GROUP_KEYS, key))
        benchmark = group["benchmark"].iloc[0]
        paper = None
        if info["dataset"] == benchmark and info["pretrained"]:
            paper = next((r for r in table.rows if (r.benchmark, r.backbone) == (benchmark, info["backbone"])
                          and (table.row_field is None or r.row_value == info["row_value"])), None)
        if paper is not None:
            matched_paper.add(id(paper))
        profiles_here = _profiles_for(profiles, table, info["backbone"], info["img_size"], info["row_value"])
        values, missing, used = _our_values(group, profiles_here, table, benchmark)
        lines.append(_line(table, info, benchmark, paper, values, missing, used, group))
    for row in table.rows:
        if id(row) not in matched_paper:
            info = {"dataset": row.benchmark, "backbone": row.backbone, "pretrained": True, "img_size": 400,
                    "original_size": False, "row_value": row.row_value}
            values = {_cell_key(s, c): np.nan for s in table.shots for c in table.columns}
            values.update({c: np.nan for c in table.model_columns})
            lines.append(_line(table, info, row.benchmark, row, values, ["all"], [], None))
    frame = pd.DataFrame(lines)
    order = {(r.benchmark, r.backbone, repr(r.row_value)): i for i, r in enumerate(table.rows)}
    frame["_synthetic"] = frame["benchmark"].str.contains("synthetic")
    frame["_order"] = [order.get((d, b, repr(v)), len(order)) for d, b, v in
                       zip(frame["dataset"], frame["backbone"], frame["row_value"])]
    frame = frame.sort_values(["_synthetic", "dataset", "_order", "backbone", "img_size"], kind="stable")
    return frame.drop(columns=["_synthetic", "_order", "row_value"]).reset_index(drop=True)


def _line(table: PaperTable, info: dict[str, Any], benchmark: str, paper, values: dict[str, float],
          missing: list[str], used: list[str], group: pd.DataFrame | None) -> dict[str, Any]:
    label = table.row_labels.get(info["row_value"], paper.label if paper else "HSNet")
    if not info["pretrained"]:
        label += " (random-init backbone)"
    if missing == ["all"] or len(missing) == len(values):
        status = "no run"
    elif missing:
        status = "no run for " + ", ".join(missing)
    else:
        status = "complete"
    line: dict[str, Any] = {
        "benchmark": dataset_label(info["dataset"]), "dataset": info["dataset"], "row_value": info["row_value"],
        "backbone": info["backbone"], "method": label, "img_size": info["img_size"],
        "original_size": info["original_size"], "status": status,
        "compared_with_paper": paper is not None,
        "episodes": int(group["episodes"].max()) if group is not None and "episodes" in group else None,
        "runs": " ".join(used),
    }
    for key, ours in values.items():
        published = paper.values.get(_split_key(key)) if paper is not None else None
        published = np.nan if published is None else published
        line[key] = ours
        line[f"{key}_paper"] = published
        line[f"{key}_diff"] = ours - published
    return line


def _split_key(key: str) -> tuple[int | None, str]:
    if "shot_" in key:
        shot, column = key.split("shot_", 1)
        return int(shot), column
    return None, key


def render_markdown(table: PaperTable, frame: pd.DataFrame) -> str:
    """The table as markdown: each cell "ours (paper, ±diff)", "no run", or the paper's value alone."""
    keys = [_cell_key(s, c) for s in table.shots for c in table.columns] + list(table.model_columns)
    header = ["benchmark", "backbone", "method", "img"] + [
        (f"{_split_key(k)[0]}-shot " if _split_key(k)[0] else "") + COLUMN_LABELS[_split_key(k)[1]] for k in keys]
    out = [f"### {table.title}", "", "| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    for _, line in frame.iterrows():
        cells = [line["benchmark"], line["backbone"], line["method"], str(line["img_size"])]
        for key in keys:
            ours, paper, diff = line[key], line[f"{key}_paper"], line[f"{key}_diff"]
            digits = 2 if key in ("time_ms", "memory_gb", "gflops") else 1
            if math.isnan(ours):
                cells.append("no run" + ("" if math.isnan(paper) else f" ({paper:.{digits}f})"))
            elif math.isnan(paper):
                cells.append(f"{ours:.{digits}f}")
            else:
                cells.append(f"{ours:.{digits}f} ({paper:.{digits}f}, {diff:+.{digits}f})")
        out.append("| " + " | ".join(cells) + " |")
    out += ["", f"Cells: ours (paper, ours - paper). {table.notes}", ""]
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
    rows["label"] = rows["label"] if "label" in rows else "HSNet"
    rows["margin_miou"] = rows["miou"] - rows[["all_foreground_miou", "all_background_miou"]].max(axis=1)
    return rows[columns].sort_values(["benchmark", "study", "label", "nshot", "fold"]).reset_index(drop=True)


# -- figures ---------------------------------------------------------------------------------------
def _bars(ax, data: dict[str, list[float]], columns: list[str], title: str) -> None:
    if all(math.isnan(v) for values in data.values() for v in values):
        ax.text(0.5, 0.5, "no run", ha="center", va="center", transform=ax.transAxes, fontsize=12, color="grey")
    width = 0.8 / max(len(data), 1)
    x = np.arange(len(columns))
    for i, (label, values) in enumerate(data.items()):
        ax.bar(x + (i - (len(data) - 1) / 2) * width, values, width, label=label)
    ax.set_xticks(x, [COLUMN_LABELS[c] for c in columns])
    ax.set_ylabel("mIoU (%)")
    ax.set_ylim(0, 100)
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.1), ncol=len(data), frameon=False)


def ablation_figure(table: PaperTable, frame: pd.DataFrame, path: Path) -> Path | None:
    """Bars per fold and mean for each variant: the paper's panel, then one panel per group of our runs."""
    import matplotlib
    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    ours = frame[frame["status"] != "no run"]
    if ours.empty:
        return None
    sources = [("paper: " + ", ".join(sorted({f"{BENCHMARK_LABELS[r.benchmark]} {r.backbone}" for r in table.rows})),
                None)]
    sources += [(f"ours: {d}, {bb}, {img}px", g) for (d, bb, img), g in
                ours.groupby(["dataset", "backbone", "img_size"], sort=False)]
    columns = list(table.columns)
    fig, axes = plt.subplots(len(sources), len(table.shots), figsize=(5.5 * len(table.shots), 3.6 * len(sources)),
                             squeeze=False)
    for r, (title, group) in enumerate(sources):
        for c, shot in enumerate(table.shots):
            if group is None:
                data = {row.label: [row.values.get((shot, col)) or np.nan for col in columns] for row in table.rows}
            else:
                data = {m.replace(" (random-init backbone)", ""): [g[f"{shot}shot_{col}"].iloc[0] for col in columns]
                        for m, g in group.groupby("method", sort=False)}
            _bars(axes[r, c], data, columns, f"{title}, {shot}-shot")
    fig.suptitle(table.title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def block_layers_figure(evals: pd.DataFrame, path: Path) -> Path | None:
    """Fig. 9: mIoU (mean over the folds run) and learnable parameters vs. 4D layers per block."""
    import matplotlib
    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    if evals.empty:
        return None
    rows = evals[evals["study"] == "block_layers"]
    if rows.empty or rows["block_layers"].nunique() < 2:
        return None
    groups = list(rows.groupby(["dataset", "backbone", "img_size"], sort=False))
    fig, axes = plt.subplots(1, len(groups), figsize=(5.5 * len(groups), 3.5), squeeze=False)
    for ax, ((dataset, backbone, img), g) in zip(axes[0], groups):
        for shot, gs in g.groupby("nshot"):
            curve = gs.groupby("block_layers")["miou"].mean()
            ax.plot(curve.index, curve.values, marker="o", label=f"{shot}-shot mIoU")
        ax.set_xlabel("4D layers per block")
        ax.set_ylabel("mIoU (%), mean over the folds run")
        ax.set_xticks(sorted(g["block_layers"].unique()))
        size = g.groupby("block_layers")["learnable_params"].first() / 1e6
        twin = ax.twinx()
        twin.bar(size.index, size.values, alpha=0.2, color="grey", label="learnable params (M)")
        twin.set_ylabel("learnable params (M)")
        ax.set_title(f"{dataset}, {backbone}, {img}px", fontsize=8)
        ax.legend(fontsize=7, loc="lower right")
    fig.suptitle("Figure 9: layers per building block (the paper gives no numbers)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def finetune_figure(trainings: pd.DataFrame, path: Path) -> Path | None:
    """Fig. 10: training and validation mIoU per epoch, frozen vs. fine-tuned backbone, one panel per fold."""
    import matplotlib
    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    trainings = trainings[trainings["study"] == "finetune"] if not trainings.empty else trainings
    if trainings.empty or trainings["finetune_backbone"].nunique() < 2:
        return None
    folds = sorted(trainings["fold"].unique())
    fig, axes = plt.subplots(1, len(folds), figsize=(4 * len(folds), 3.3), squeeze=False)
    for ax, fold in zip(axes[0], folds):
        for _, t in trainings[trainings["fold"] == fold].iterrows():
            history = pd.DataFrame(t["history"])
            name = "fine-tuned" if t["finetune_backbone"] else "frozen"
            color = "tab:red" if t["finetune_backbone"] else "tab:blue"
            ax.plot(history["epoch"], history["train_miou"], color=color, linestyle="--", label=f"{name} train")
            ax.plot(history["epoch"], history["val_miou"], color=color, label=f"{name} val")
        ax.set_title(f"{trainings['dataset'].iloc[0]}, fold {fold}", fontsize=8)
        ax.set_xlabel("epoch")
        ax.set_ylabel("mIoU (%)")
        ax.legend(fontsize=7)
    fig.suptitle("Figure 10: learning curves, frozen vs. fine-tuned backbone", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


# -- output ----------------------------------------------------------------------------------------
def markdown_table(frame: pd.DataFrame, floatfmt: str = ".1f") -> str:
    """A frame as a GitHub markdown table (floats formatted, NaN as "no run")."""
    def cell(value: Any) -> str:
        if isinstance(value, float):
            return "no run" if math.isnan(value) else format(value, floatfmt)
        return str(value)
    lines = ["| " + " | ".join(map(str, frame.columns)) + " |", "|" + " --- |" * len(frame.columns)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join(lines) + "\n"


def _baselines_markdown(frame: pd.DataFrame) -> str:
    if frame.empty:
        return "No evaluation with trivial baselines: no run.\n"
    return markdown_table(frame.drop(columns=["run"]))


def write_results(runs_dir: str | Path, out_dir: str | Path) -> dict[str, Any]:
    """Write every table, figure and README.md into out_dir; returns the frames and written paths."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    data = collect(runs_dir)
    written: dict[str, Any] = {"tables": {}, "figures": {}}
    markdown: dict[str, str] = {}
    for key, table in TABLES.items():
        frame = build_table(table, data["evaluations"], data["profiles"])
        frame.to_csv(out_dir / f"{key}.csv", index=False, float_format="%.6g")
        markdown[key] = render_markdown(table, frame)
        (out_dir / f"{key}.md").write_text(markdown[key])
        written["tables"][key] = frame
        if table.figure:
            written["figures"][table.figure] = ablation_figure(table, frame, out_dir / f"{table.figure}.png")
    baselines = baselines_table(data["evaluations"])
    baselines.to_csv(out_dir / "baselines.csv", index=False, float_format="%.6g")
    (out_dir / "baselines.md").write_text(_baselines_markdown(baselines))
    written["tables"]["baselines"] = baselines
    written["figures"]["fig9"] = block_layers_figure(data["evaluations"], out_dir / "fig9.png")
    written["figures"]["fig10"] = finetune_figure(data["trainings"], out_dir / "fig10.png")
    for name, path in written["figures"].items():
        if path is None:
            (out_dir / f"{name}.png").unlink(missing_ok=True)  # a stale figure must not outlive its runs
    (out_dir / "README.md").write_text(readme(runs_dir, data, written, markdown, baselines))
    written["data"] = data
    return written


def readme(runs_dir: str | Path, data: dict[str, pd.DataFrame], written: dict[str, Any], markdown: dict[str, str],
           baselines: pd.DataFrame) -> str:
    evals = data["evaluations"]
    runs = sorted(set().union(*[set(f["run"]) for f in data.values() if not f.empty]))
    versions = sorted(set().union(*[set(f["code_version"].dropna()) for f in data.values() if not f.empty]))
    synthetic = not evals.empty and evals["dataset"].str.startswith("synthetic").any()
    runs_path = Path(runs_dir).resolve()
    if runs_path.is_relative_to(project_root()):
        runs_path = runs_path.relative_to(project_root())
    lines = [
        "# Results",
        "",
        "Generated by `python -m hsnetlib.results` (notebook `11_results.ipynb`) from the run records "
        f"(`metrics.json`) under `{runs_path.as_posix()}`: {len(runs)} run(s) with results, code version(s) "
        f"{', '.join(versions) or 'none'}. Do not edit by hand: re-run the grid and this command.",
        "",
        "Grids: `grids/demo.toml` (`make demo`: synthetic benchmark, CPU, small scale) and `grids/paper.toml` "
        "(the paper's full protocol: real data, GPU). Each run folder (`runs/<grid>/<run>/`) holds the executed "
        "notebook, `params.json` and `metrics.json` (parameters, seed, checkpoint sha256, code and library "
        "versions, device).",
        "",
    ]
    if synthetic:
        lines += ["**These results come (at least partly) from the synthetic demo benchmark.** Its lines are labelled "
                  "`synthetic-...` in the `benchmark` column and are never compared with the paper's numbers: the "
                  "paper columns stay empty for them. They show that the pipeline runs end to end and that the "
                  "trained model beats trivial predictions on held-out classes, nothing more. The demo's ablations "
                  "train every variant for a few hundred episodes only: a variant near 0 mIoU has not yet left the "
                  "all-background solution that training starts from, so they show which variants learn fastest at "
                  "that budget, not the paper's comparison (grids/paper.toml runs that).", ""]
    lines += [
        "## Files",
        "",
        "| file | what | produced by |",
        "| --- | --- | --- |",
    ]
    for key, table in TABLES.items():
        lines.append(f"| [{key}.csv]({key}.csv), [{key}.md]({key}.md) | {table.title} | {SOURCES[key]} |")
    lines.append(f"| [baselines.csv](baselines.csv), [baselines.md](baselines.md) | trained model vs. trivial "
                 f"all-foreground / all-background predictions on held-out classes | {SOURCES['baselines']} |")
    for name in ("fig6", "fig7", "fig9", "fig10"):
        what = {"fig6": "Figure 6 (= Table A3)", "fig7": "Figure 7 (= Table A4)",
                "fig9": FIGURES_WITHOUT_NUMBERS["fig9"], "fig10": FIGURES_WITHOUT_NUMBERS["fig10"]}[name]
        exists = written["figures"].get(name) is not None
        lines.append(f"| {f'[{name}.png]({name}.png)' if exists else f'{name}.png: no run'} | {what} | "
                     f"{SOURCES[name]} |")
    lines += [
        "",
        "## Table columns",
        "",
        "* `benchmark` (with `dataset`, its short name), `backbone`, `method` (the paper's row), `img_size`, "
        "`original_size` (scored at the original image size), `episodes` (per fold and shot), `runs` (run "
        "folders used).",
        "* `status`: `complete`, `no run` (nothing behind the line), or `no run for ...` listing the empty cells.",
        "* `compared_with_paper`: false for synthetic data, randomly initialised backbones, or lines the paper "
        "does not have; their `_paper` and `_diff` columns are empty.",
        "* `<K>shot_fold<i>` / `_mean` / `_fbiou`: our mIoU per fold, mean over folds, FB-IoU (mean over folds) "
        "for K-shot; `_paper` the published value; `_diff` ours minus paper. `mean` and `fbiou` need every "
        "fold. Model columns: `params_M`, `time_ms`, `memory_gb`, `gflops` (Table 4; measured on the run's "
        "device, see the run's `metrics.json`).",
        "* Several runs of one cell (e.g. seeds) are averaged.",
        "",
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
    n = sum(len(f) for f in written["data"].values())
    print(f"{n} record entries from {args.runs} -> {args.out}/ "
          f"({', '.join(sorted(written['tables']))}; figures: "
          f"{', '.join(k for k, v in written['figures'].items() if v is not None) or 'none'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
