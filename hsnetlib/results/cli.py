"""``python -m hsnetlib.results --runs runs --out results``: every table, figure, runs.csv and README.md.

Writes into ``--out``: ``table1.md`` .. ``tableA4.md``, ``backbones.md`` ("HSNet across backbones"),
``cdfss.md`` ("Cross-domain (PATNet Table 1)"), a ``benchmark-<name>.md`` per evaluated benchmark
without published numbers (each with its ``.csv``); ``baselines.md`` / ``.csv``; the figures
(``fig6.png``, ``fig7.png``, ``fig9.png``, ``fig10.png``, ``curves_<study>.png``; a figure without a
run is not drawn, and a stale one is removed); ``runs.csv`` (every run record read) and ``README.md``
(what each file holds, which notebook produces it, how to read it, and the tables rendered). Every
file is written atomically.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, Iterable

from hsnetlib.results import figures, render
from hsnetlib.results.collect import collect
from hsnetlib.results.tables import all_tables, baselines_table, benchmark_tables, build_table, curves_figure_name
from hsnetlib.utils import atomic_write


def _write_csv(frame, path: Path) -> None:
    atomic_write(path, frame.to_csv(index=False, float_format="%.6g"))


def _figure(draw, path: Path, *args) -> Path | None:
    """Draw a figure into a temporary file and move it in place (None: not drawn)."""
    partial = path.with_name(f".{path.name}.partial.png")
    drawn = draw(*args, partial)
    if drawn is None:
        return None
    partial.replace(path)
    return path


def write_results(runs_dir: str | Path, out_dir: str | Path) -> dict[str, Any]:
    """Write every table, figure, runs.csv and README.md into out_dir; returns {"tables": {key: frame},
    "figures": {name: path or None}, "data": the frames of :func:`hsnetlib.results.collect.collect`}."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    data = collect(runs_dir)
    evals, trainings = data["evaluations"], data["trainings"]
    tables = {**all_tables(), **benchmark_tables(evals)}
    written: dict[str, Any] = {"tables": {}, "figures": {}}
    markdown: dict[str, str] = {}
    trained = set(trainings["study"]) if not trainings.empty else set()  # the studies with learning curves
    for key, table in tables.items():
        frame = build_table(table, evals, data["profiles"], trained)
        written["tables"][key] = frame
        markdown[key] = render.render_markdown(table, frame, data["runs"])
        if table.figure:
            written["figures"][table.figure] = _figure(figures.ablation_figure, out_dir / f"{table.figure}.png",
                                                       table, frame)
    written["tables"]["baselines"] = baselines_table(evals)
    written["figures"]["fig9"] = _figure(figures.block_layers_figure, out_dir / "fig9.png", evals, trainings)
    studies = ["finetune"] + (sorted(set(trainings["study"]) - {"finetune", "block_layers"})
                              if not trainings.empty else [])
    for study in studies:
        name = curves_figure_name(study)
        written["figures"][name] = _figure(figures.curves_figure, out_dir / f"{name}.png", trainings, study)
    for key, frame in written["tables"].items():
        _write_csv(frame, out_dir / f"{key}.csv")
    for key, text in markdown.items():
        atomic_write(out_dir / f"{key}.md", text)
    atomic_write(out_dir / "baselines.md", render.baselines_markdown(written["tables"]["baselines"]))
    _write_csv(data["runs"], out_dir / "runs.csv")
    stale = ({p.stem for p in out_dir.glob("curves_*.png")} - set(written["figures"])) \
        | {n for n, p in written["figures"].items() if p is None}
    for name in stale:
        (out_dir / f"{name}.png").unlink(missing_ok=True)  # a stale figure must not outlive its runs
    stale_tables = {p.stem for p in out_dir.glob("benchmark-*.md")} - set(tables)
    for name in stale_tables:
        for ext in ("md", "csv"):
            (out_dir / f"{name}.{ext}").unlink(missing_ok=True)
    atomic_write(out_dir / "README.md", render.readme(runs_dir, data, tables, written, markdown))
    written["data"] = data
    return written


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
    drawn = ", ".join(k for k, v in written["figures"].items() if v is not None) or "none"
    print(f"{len(written['data']['runs'])} run records from {args.runs} -> {args.out}/ "
          f"({', '.join(sorted(written['tables']))}; figures: {drawn})")
    return 0
