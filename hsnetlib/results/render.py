"""Rendering the tables: markdown (lines as paper / ours / Δ rows, with the run records behind them), CSV, and
the results folder's README.md with its reading guide."""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pandas as pd

from hsnetlib.results import registries
from hsnetlib.results.paper import COLUMN_LABELS, FIGURE_SOURCES, FIGURES_WITHOUT_NUMBERS, PaperTable
from hsnetlib.results.tables import NOT_CONVERGED, NOT_RUN, OTHER, PAPER, SYNTHETIC, cell_keys, fold_label
from hsnetlib.suite.paths import project_root

SECTION_TEXT = {
    PAPER: "**Paper protocol** (the paper's benchmark, ImageNet backbone): Δ = ours − paper.",
    OTHER: "**Not the paper's setting** (a randomly initialised backbone, or a data set without published "
           "numbers): ours only, never compared with the paper.",
    SYNTHETIC: "**Synthetic demo** (generated images, randomly initialised backbone, small scale): it shows that "
               "the pipeline runs end to end; it is not a reproduction and is never compared with the paper.",
}
BASELINES_SOURCE = "02_evaluate.ipynb (and every notebook that scores the trivial baselines)"


def column_label(column: str) -> str:
    """A column's header: the paper's name, a fold, or (cross-domain table) the target benchmark's label."""
    if column in COLUMN_LABELS:
        return COLUMN_LABELS[column]
    return fold_label(column) or registries.benchmark(column).label


def _number(value: float, column: str, decimals: int = 1) -> str:
    return format(value, ".2f" if column in ("time_ms", "memory_gb", "gflops") else f".{decimals}f")


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
    episodes = sorted({int(n) for e in measured["episodes"].dropna() for n in str(e).split("/")})
    if episodes:
        label += f", {'/'.join(map(str, episodes))} episodes"
    counts = sorted({int(n) for n in measured["n_runs"] if n > 1})
    if counts:
        label += f", mean of {counts[0] if len(counts) == 1 else f'{counts[0]}-{counts[-1]}'} runs"
    curves = sorted(set(measured["curves"].dropna()))
    if curves:
        label += "; not converged: learning curves in " + ", ".join(f"[{c}]({c})" for c in curves)
    return label


def _line_rows(table: PaperTable, cells: pd.DataFrame, refs: dict[str, int]) -> list[list[str]]:
    """The markdown rows of one line: paper, ours, Δ ours − paper, Δ vs the reference (paired); a line the
    table expects but nobody ran and the paper lacks reads "no run"."""
    first = cells.iloc[0]
    img = ("–" if pd.isna(first["img_size"]) else f"{int(first['img_size'])}") \
        + (" (original size)" if first["original_size"] else "")
    head = [registries.benchmark(first["dataset"]).label if first["section"] != SYNTHETIC else first["dataset"],
            first["backbone"], first["method"], img]
    ran = (cells["status"] != NOT_RUN).any()
    reference = any(r.reference and r.label == first["method"] for r in table.rows)
    rows = []
    if cells["paper"].notna().any():
        label = "published, for reference" if reference else "paper" if ran else "paper (not run here)"
        rows.append([label, *["n/a" if math.isnan(v) else _number(v, c, table.decimals) for v, c in
                              zip(cells["paper"], cells["column"])], ""])
    elif not ran:
        rows.append(["no run", *["–"] * len(cells), ""])
    if ran:
        runs = sorted({r for rs in cells["runs"] for r in rs.split()}, key=lambda r: refs[r])
        rows.append([_ours_label(cells), *[_ours_text(c) for _, c in cells.iterrows()],
                     " ".join(f"[{refs[r]}]" for r in runs)])
        deltas = cells["delta_vs_paper"]
        if deltas.notna().any():
            rows.append(["Δ ours − paper", *["" if math.isnan(d) else _signed(d) for d in deltas], ""])
        paired = [_paired_text(c) for _, c in cells.iterrows()]
        if any(paired):
            compared = cells["reference"].dropna().iloc[0]
            rows.append([f"Δ vs {table.row_labels.get(compared, compared)}, paired", *paired, ""])
    return [(head if i == 0 else [""] * len(head)) + row for i, row in enumerate(rows)]


def line_groups(frame: pd.DataFrame) -> list[pd.DataFrame]:
    """The frame's lines (all cells of one method on one data set, backbone and size), in the frame's order."""
    keys = ["section", "dataset", "backbone", "method", "img_size", "original_size"]
    return [g for _, g in frame.groupby(keys, sort=False, dropna=False)]


def run_note(number: int, run: pd.Series) -> str:
    """A run record as a note under a table: notebook, seed, checkpoints, code version, device, the data settings
    of its evaluations (benchmark options, episodes), parameters."""
    parameters = ", ".join(f"{k}={v!r}" for k, v in json.loads(run["parameters"]).items())
    seed = run["seed"]  # a float column once a record lacks its seed
    if seed is None or (isinstance(seed, float) and math.isnan(seed)):
        seed = "none"
    elif isinstance(seed, float) and seed.is_integer():
        seed = int(seed)
    return (f"[{number}] `{run['run']}`: {run['notebook']}, seed {seed}, "
            f"checkpoints {run['checkpoints'] or 'none'}, code {run['code_version']}, device {run['device']}; "
            + (f"data: {run['data']}; " if isinstance(run.get("data"), str) and run["data"] else "")
            + f"parameters: {parameters}")


def render_markdown(table: PaperTable, frame: pd.DataFrame, runs: pd.DataFrame) -> str:
    """The table as markdown: per section a table whose lines read as paper / ours / Δ rows, the notes, and the
    run records behind the ``ours`` rows."""
    header = ["data", "backbone", "method", "img", ""] + [
        (f"{shot}-shot " if shot else "") + column_label(column) for shot, column in cell_keys(table)] + ["runs"]
    used = [r for rs in frame["runs"] for r in rs.split()] if not frame.empty else []
    refs = {run: i + 1 for i, run in enumerate(dict.fromkeys(used))}
    out = [f"### {table.title}", ""]
    if frame.empty:
        out += ["No run and no published number.", ""]
    for section, part in frame.groupby("section", sort=False):
        out += [SECTION_TEXT[section], "", "| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
        for cells in line_groups(part):
            out += ["| " + " | ".join(row) + " |" for row in _line_rows(table, cells, refs)]
        out.append("")
    out += [f"Cells: mIoU (%) [bootstrap 95% interval]; – no run; n/a lost from the paper's transcription. "
            f"{table.notes}", ""]
    if refs:
        by_run = runs.set_index("run", drop=False)
        out += ["Run records:", ""] + [f"* {run_note(n, by_run.loc[r])}" for r, n in refs.items()] + [""]
    return "\n".join(out)


def markdown_table(frame: pd.DataFrame, floatfmt: str = ".1f") -> str:
    """A frame as a GitHub markdown table (floats formatted, NaN as "–")."""
    def cell(value: Any) -> str:
        if isinstance(value, float):
            return "–" if math.isnan(value) else format(value, floatfmt)
        return str(value)
    lines = ["| " + " | ".join(map(str, frame.columns)) + " |", "|" + " --- |" * len(frame.columns)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join(lines) + "\n"


def baselines_markdown(frame: pd.DataFrame) -> str:
    if frame.empty:
        return "No evaluation with trivial baselines: no run.\n"
    return markdown_table(frame.drop(columns=["run"]))


def write_csv(frame: pd.DataFrame, path: Path) -> None:
    frame.to_csv(path, index=False, float_format="%.6g")


def scale(frame: pd.DataFrame) -> str:
    """Which sections of a table have runs, e.g. "synthetic demo (2 lines)"; "no run" if none."""
    ran = frame[frame["status"] != NOT_RUN]
    if ran.empty:
        return "no run"
    lines = {section: len(line_groups(part)) for section, part in ran.groupby("section", sort=False)}
    return ", ".join(f"{section} ({n} line{'s' if n > 1 else ''})" for section, n in lines.items())


READING = """\
## How to read the tables

Each table keeps the paper's columns (fold 0-3, their mean, FB-IoU; Table 4 adds the model's size,
time, memory and FLOPs; the cross-domain table has one column per target data set and their mean).
A line is one method on one data set, backbone, image size (`img`) and scoring size; in markdown it
reads as rows:

* `paper`: the published value (`n/a`: lost from the paper's markdown transcription, see
  `hsnetlib.results.paper.MISSING`); `paper (not run here)`: no run of ours behind the line at all;
  `published, for reference`: another method's published row (PATNet's, whose numbers include
  test-time fine-tuning), never compared with ours; `no run`: a line the table expects (a new
  backbone) with neither a published number nor a run.
* `ours` (`synthetic demo` in the demo's tables): our mIoU (%) with its **bootstrap 95% interval**
  in brackets (resampling the test episodes of the run; `hsnetlib.metrics.bootstrap_miou`). The row label says how many test
  episodes each cell scored and, where a cell averages several runs (e.g. seeds), "mean of N runs".
  Runs are only averaged when they scored the same number of episodes (otherwise the command stops
  and names them); runs at different image sizes are separate lines. The interval of a mean (over
  runs, or over the folds or targets in `mean`) combines the individual intervals as independent
  estimates (half-widths in quadrature, divided by their count). `mean` and `FB-IoU` need every
  fold (every target). `–`: no run. `not converged`: the training behind that number never left the
  all-background solution (its training entry, or the `best.pt` an evaluation scored, says
  `converged: false`; an authors' checkpoint is unknown, not marked), so its mIoU would mislead; the
  row names the figure with its learning curves where the training is among the runs. `[1] [2]` name
  the run records behind the row, listed under the table (notebook, seed, checkpoint, code version,
  parameters) and in `runs.csv`.
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
protocol** come from `grids/paper.toml`, `grids/backbones.toml` and `grids/cdfss.toml` (real data,
ImageNet backbones, GPU). A benchmark without published numbers (e.g. a `folder` data set) gets a
table of its own, `benchmark-<name>.md`, and is never compared with the paper.

The CSV files hold the same numbers, one row per line and cell: `section`, `benchmark`, `dataset`,
`backbone`, `method`, `img_size`, `original_size`, `shot`, `column`, `paper`, `ours`, `ci95_low`,
`ci95_high`, `delta_vs_paper`, `reference`, `paired_delta`, `paired_ci95_low`, `paired_ci95_high`,
`status` (`measured`, `no run`, `not converged`), `n_runs`, `episodes`, `curves` (the learning-curve
figure of a non-converged cell) and `runs` (run folders, see `runs.csv`).
"""


def _relative(path: Path) -> str:
    path = path.resolve()
    return (path.relative_to(project_root()) if path.is_relative_to(project_root()) else path).as_posix()


def readme(runs_dir: str | Path, data: dict[str, pd.DataFrame], tables: dict[str, PaperTable],
           written: dict[str, Any], markdown: dict[str, str]) -> str:
    """README.md of the results folder: provenance, one line per file (what, produced by, scale), how to read
    the tables, and the tables rendered."""
    runs, trainings = data["runs"], data["trainings"]
    versions = sorted(set(runs["code_version"].dropna())) if not runs.empty else []
    baselines = written["tables"]["baselines"]
    lines = [
        "# Results",
        "",
        "Generated by `python -m hsnetlib.results` (notebook `11_results.ipynb`) from the run records "
        f"(`metrics.json`) under `{_relative(Path(runs_dir))}`: {len(runs)} run(s), code version(s) "
        f"{', '.join(versions) or 'none'}. Do not edit by hand: re-run the grid and this command.",
        "",
        "Grids: `grids/demo.toml` (`make demo`: synthetic benchmark, CPU, small scale), `grids/paper.toml` "
        "(the paper's full protocol: real data, GPU), `grids/backbones.toml` (HSNet with other backbones) and "
        "`grids/cdfss.toml` (the cross-domain benchmark). Each run folder (`runs/<grid>/<run>/`) holds the executed "
        "notebook, `params.json` and `metrics.json` (parameters, seed, checkpoint sha256, code and library "
        "versions, device); [runs.csv](runs.csv) lists them all.",
        "",
        "## Files",
        "",
        "| file | what | produced by | scale of our runs |",
        "| --- | --- | --- | --- |",
    ]
    for key, table in tables.items():
        lines.append(f"| [{key}.md]({key}.md), [{key}.csv]({key}.csv) | {table.title} | {table.source} | "
                     f"{scale(written['tables'][key])} |")
    lines.append(f"| [baselines.md](baselines.md), [baselines.csv](baselines.csv) | trained model vs. trivial "
                 f"all-foreground / all-background predictions on held-out classes | {BASELINES_SOURCE} | "
                 f"{len(baselines)} evaluation(s) |")
    figure_tables = {t.figure: t for t in tables.values() if t.figure}
    for name, path in written["figures"].items():
        study = name.removeprefix("curves_")
        link = f"[{name}.png]({name}.png)" if path is not None else f"{name}.png: no run"
        if name in figure_tables:
            what, source = f"{figure_tables[name].title.split(': ')[0]}: bars with intervals", \
                figure_tables[name].source
        elif name in FIGURES_WITHOUT_NUMBERS:
            what, source = FIGURES_WITHOUT_NUMBERS[name], FIGURE_SOURCES[name]
        else:
            what = f"learning curves of the {study} study (per-epoch history)"
            source = ", ".join(sorted(set(trainings.loc[trainings["study"] == study, "notebook"])))
        lines.append(f"| {link} | {what} | {source} | |")
    lines += ["", READING, "## Trained model vs. trivial baselines", "", baselines_markdown(baselines),
              "## Tables", "", *markdown.values()]
    return "\n".join(lines)
