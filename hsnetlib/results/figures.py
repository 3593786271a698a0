"""The figures, each drawn once from the collected runs (matplotlib with seaborn's styling).

* :func:`learning_curves`: training / validation mIoU per epoch of a trainings frame, drawn by
  :func:`hsnetlib.viz.draw_learning_curves` (Fig. 10, Fig. 9's right panels, ``curves_<study>.png``).
* :func:`ablation_figure`: Figs. 6 and 7, bars with intervals per variant, the paper's panel apart.
* :func:`block_layers_figure`: Fig. 9, mIoU and model size vs. 4D layers per block.
* :func:`curves_figure`: the learning curves of one study, a panel per data set, backbone, size, fold.

Every function takes empty inputs: no run at all gives no figure (None); a panel without a point to
draw (every variant unconverged) says so in the panel.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd

from hsnetlib import viz
from hsnetlib.results import registries
from hsnetlib.results.paper import COLUMN_LABELS, PaperTable
from hsnetlib.results.tables import MEASURED, NOT_CONVERGED, NOT_RUN, mean_interval
from hsnetlib.suite.records import not_converged


def _pyplot():
    import matplotlib
    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    return plt


def _figure(rows: int, cols: int, size: tuple[float, float]):
    import seaborn as sns

    sns.set_theme(style="whitegrid", context="paper")
    return _pyplot().subplots(rows, cols, figsize=(size[0] * cols, size[1] * rows), squeeze=False)


def _save(fig, title: str, path: Path) -> Path:
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    _pyplot().close(fig)
    return path


def _say(ax, text: str) -> None:
    """A panel with nothing to draw says why."""
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, fontsize=10, color="grey")


def learning_curves(ax, trainings: pd.DataFrame) -> None:
    """The trainings frame's learning curves on `ax`, drawn by :func:`hsnetlib.viz.draw_learning_curves`
    (validation solid, training dashed, a colour per variant; ``converged`` NaN, an older record, is unknown)."""
    entries = trainings.to_dict("records") if not trainings.empty else []
    viz.draw_learning_curves(ax, [{**t, "converged": not not_converged(t.get("converged"))} for t in entries])


def curves_figure(trainings: pd.DataFrame, study: str, path: Path) -> Path | None:
    """Learning curves of one study's trainings: one panel per data set, backbone, image size and fold, one
    colour per variant. Fig. 10 is the "finetune" study's. None (nothing drawn) without a training."""
    rows = trainings[trainings["study"] == study] if not trainings.empty else trainings
    if rows.empty:
        return None
    keys = [k for k in ("dataset", "backbone", "img_size", "fold") if k in rows]  # older entries lack img_size
    groups = list(rows.groupby(keys, sort=True))
    fig, axes = _figure(1, len(groups), (4.2, 3.4))
    for ax, (key, group) in zip(axes[0], groups):
        learning_curves(ax, group)
        ax.set_title(", ".join(f"{k.replace('img_size', 'px')} {v}" for k, v in zip(keys, key)), fontsize=8)
    title = {"finetune": "Figure 10: learning curves, frozen vs. fine-tuned backbone"}.get(
        study, f"Learning curves of the {study} study")
    return _save(fig, title, path)


def _bars(ax, data: dict[str, pd.DataFrame], columns: list[str], title: str) -> None:
    """Grouped bars (one group per column, one bar per variant) with their intervals; "n.c." marks a variant
    that did not converge. data: label -> frame with ours, ci95_low, ci95_high, status per column."""
    if not any((d["status"] != NOT_RUN).any() for d in data.values()):
        _say(ax, "no run")
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
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.1), ncol=max(len(data), 1), frameon=False)


def ablation_figure(table: PaperTable, frame: pd.DataFrame, path: Path) -> Path | None:
    """Bars per fold and mean for each variant: the paper's panel, then one panel per data set, backbone and
    image size of our runs. None without a run."""
    if frame.empty or (frame["status"] == NOT_RUN).all():
        return None
    columns = list(table.columns)
    published = {"ci95_low": np.nan, "ci95_high": np.nan, "status": MEASURED}
    benchmarks = sorted({f"{registries.benchmark(r.benchmark).label} {r.backbone}" for r in table.rows})
    panels: list[tuple[str, Callable[[int], dict[str, pd.DataFrame]]]] = [
        ("paper: " + ", ".join(benchmarks),
         lambda shot: {r.label: pd.DataFrame([{"ours": r.values.get((shot, c)) or np.nan, **published}
                                              for c in columns]) for r in table.rows})]
    for (dataset, backbone, img, original), group in frame.groupby(
            ["dataset", "backbone", "img_size", "original_size"], sort=False):
        if not (group["status"] != NOT_RUN).any():
            continue
        size = f"{img}px" + (", original size" if original else "")
        panels.append((f"ours: {dataset}, {backbone}, {size}", lambda shot, g=group: {
            m.replace(" (random-init backbone)", ""): cells.set_index("column").loc[columns].reset_index()
            for m, cells in g[g["shot"] == shot].groupby("method", sort=False)}))
    fig, axes = _figure(len(panels), len(table.shots), (5.5, 3.6))
    for r, (title, data) in enumerate(panels):
        for c, shot in enumerate(table.shots):
            _bars(axes[r, c], data(shot), columns, f"{title}, {shot}-shot")
    return _save(fig, table.title, path)


def _layer_points(rows: pd.DataFrame) -> pd.DataFrame:
    """Fig. 9's points of one shot: per number of layers with a converged training, the mean mIoU over the
    folds run and its interval (layers whose training did not converge have no point)."""
    points = [(layers, *mean_interval(g["miou"], g["ci95_low"], g["ci95_high"]))
              for layers, g in rows.groupby("block_layers") if not g["converged"].map(not_converged).any()]
    return pd.DataFrame(points, columns=["layers", "miou", "low", "high"])


def block_layers_figure(evals: pd.DataFrame, trainings: pd.DataFrame, path: Path) -> Path | None:
    """Fig. 9: mIoU (mean over the folds run, with its interval) and learnable parameters vs. 4D layers per
    block, beside the learning curves of the variants' trainings. None without two variants evaluated; a panel
    whose variants all failed to converge says so instead of its points."""
    rows = evals[evals["study"] == "block_layers"] if not evals.empty else evals
    if rows.empty or rows["block_layers"].nunique() < 2:
        return None
    groups = list(rows.groupby(["dataset", "backbone", "img_size"], sort=False))
    fig, axes = _figure(len(groups), 2, (5.5, 3.6))
    for (ax, curve_ax), ((dataset, backbone, img), g) in zip(axes, groups):
        drawn = False
        for shot, gs in g.groupby("nshot"):
            points = _layer_points(gs)
            if points.empty:
                continue
            drawn = True
            ax.errorbar(points["layers"], points["miou"], capsize=3, marker="o", label=f"{shot}-shot mIoU",
                        yerr=np.nan_to_num(np.abs([points["miou"] - points["low"], points["high"] - points["miou"]])))
        if drawn:
            ax.legend(fontsize=7, loc="lower right")
        else:
            _say(ax, "no variant converged: no mIoU to plot")
        ax.set_xlabel("4D layers per block (a missing point: not converged)")
        ax.set_ylabel("mIoU (%), mean over the folds run")
        ax.set_xticks(sorted(g["block_layers"].unique()))
        size = g.groupby("block_layers")["learnable_params"].first().dropna() / 1e6
        twin = ax.twinx()
        twin.bar(size.index, size.values, alpha=0.2, color="grey", label="learnable params (M)")
        twin.set_ylabel("learnable params (M)")
        twin.grid(False)
        ax.set_title(f"{dataset}, {backbone}, {img}px", fontsize=8)
        runs = trainings[(trainings["study"] == "block_layers") & (trainings["dataset"] == dataset)
                         & (trainings["backbone"] == backbone) & (trainings["img_size"] == img)] \
            if not trainings.empty else trainings
        learning_curves(curve_ax, runs)
        curve_ax.set_title(f"learning curves: {dataset}, {backbone}, {img}px", fontsize=8)
    return _save(fig, "Figure 9: layers per building block (the paper gives no numbers)", path)
