"""The published numbers, as data, so that our results can sit beside them.

Transcribed from /work/shared/paper/hsnet-paper.md (Min, Kang, Cho, ICCV 2021): only the HSNet rows
of Tables 1, 2, 3, 4, A1, A2, A3 and A4, with every per-fold value. Other methods' rows are not
kept: this suite reproduces HSNet, it does not re-run the baselines of the comparison tables. The one
exception is the cross-domain table (:data:`CDFSS`, PATNet's Table 1, from
/work/shared/spec/cdfss-protocol.md section 6): HSNet's row, and PATNet's row for reference only.

Each :class:`PaperTable` also describes the table's layout (benchmarks, shots, columns, and which
model option tells its rows apart), which :mod:`hsnetlib.results.tables` uses to put runs in the same
cells. Columns: ``fold0`` .. ``fold3`` (5^i on PASCAL-5i, 20^i on COCO-20i), ``mean`` (mIoU averaged
over the folds; the only column of FSS-1000, which has a single test split), ``fbiou`` (FB-IoU
averaged over the folds) and the model columns ``params_M`` (learnable parameters, millions),
``time_ms`` (1-shot per-episode inference), ``memory_gb`` and ``gflops``. A table laid out by
``targets`` (the cross-domain one) has one column per test benchmark instead of one per fold, and
``mean`` averages the targets.

Values the paper does not give are ``None``:

* Figures 6 and 7 are Tables A3 and A4 (the paper says so); Figure 9 (number of 4D layers per
  block) and Figure 10 (learning curves of the fine-tuned and frozen backbones) have no numbers in
  the text, so they have no entries here and :mod:`hsnetlib.results` plots our runs alone.
* The markdown transcription lost a few cells of rows that start with an empty cell (the values
  shift one column left and the last one drops): Table 2 5-shot FB-IoU of both HSNet rows and
  Table 3 5-shot mIoU of the VGG16 and ResNet101 rows. They are ``None`` (see ``MISSING``) rather
  than filled from memory; the PDF has them.
* Table 1's "# learnable params" of the ResNet50/101 rows is lost the same way; the value used
  (2.6M) is stated in Tables A6 and A7 ("The total number of 'learnable' parameters amounts to 2.6M").
* Table 4's time, memory and FLOPs were measured with ResNet101 at 400x400 on an Intel i7-7820X
  and an NVIDIA Titan-XP (1-shot, per episode).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pandas as pd

FOLD_COLUMNS = ("fold0", "fold1", "fold2", "fold3", "mean")
MODEL_COLUMNS = ("params_M", "time_ms", "memory_gb", "gflops")
COLUMN_LABELS = {
    "fold0": "fold 0", "fold1": "fold 1", "fold2": "fold 2", "fold3": "fold 3", "mean": "mean",
    "fbiou": "FB-IoU", "params_M": "# learnable params (M)", "time_ms": "time (ms)",
    "memory_gb": "memory (GB)", "gflops": "FLOPs (G)",
}


@dataclass(frozen=True)
class PaperRow:
    """One HSNet row of a paper table: the setting that defines it and its published numbers.

    ``values`` maps (shot, column) to the number; model columns use shot ``None``.
    ``row_value`` is the value of the table's distinguishing model option (``PaperTable.row_field``).
    A row without ``values`` is a line the table expects a run for but the paper does not have (a
    new backbone); a ``reference`` row is another method's, shown for reference and never matched
    with our runs.
    """
    label: str
    benchmark: str
    backbone: str
    values: dict[tuple[int | None, str], float | None]
    row_value: Any = None
    reference: bool = False


@dataclass(frozen=True)
class PaperTable:
    """Layout of one paper table and its HSNet rows."""
    key: str                           # file stem in results/, e.g. "table1"
    title: str
    benchmarks: tuple[str, ...]
    shots: tuple[int, ...]
    columns: tuple[str, ...]           # per-shot columns
    rows: tuple[PaperRow, ...]
    model_columns: tuple[str, ...] = ()  # shot-independent columns
    row_field: str | None = None       # the model option that tells rows apart (besides the backbone)
    row_labels: dict[Any, str] = field(default_factory=dict)
    ignore_label: bool | None = True   # PASCAL boundary handling of the evaluation; None: not relevant
    figure: str | None = None          # the figure that plots the same numbers
    notes: str = ""
    layout: str = "folds"              # "folds": a column per fold; "targets": a column per test benchmark
    train_benchmark: str | None = None  # the training benchmark of every run of the table (None: the test's)
    studies: dict[str, tuple[Any, ...] | None] = field(default_factory=lambda: {"main": None})
    # ^ which studies (the `study` of an evaluation) fill the table, with which row values (None: any). An
    #   ablation's reference variant has the default options but was trained with the ablation's budget, so
    #   it appears in the ablation's table only.
    source: str = ""                   # the notebooks (and grid runs) that produce the table
    paper_backbones_only: bool = True  # lines of the paper's backbones only (others: "HSNet across backbones")
    decimals: int = 1                  # of the published mIoU, as printed


def _shots(columns: tuple[str, ...], **per_shot: list[float | None]) -> dict[tuple[int | None, str], float | None]:
    """{(shot, column): value} from lists given as one=[...], five=[...], ten=[...] in column order."""
    shot_of = {"one": 1, "five": 5, "ten": 10}
    values: dict[tuple[int | None, str], float | None] = {}
    for name, numbers in per_shot.items():
        if len(numbers) != len(columns):
            raise ValueError(f"{name}: {len(numbers)} numbers for columns {columns}")
        values.update({(shot_of[name], c): v for c, v in zip(columns, numbers)})
    return values


def _row(label: str, benchmark: str, backbone: str, columns: tuple[str, ...], row_value: Any = None,
         model: dict[str, float] | None = None, reference: bool = False, **per_shot: list[float | None]) -> PaperRow:
    """A PaperRow from per-shot lists in column order (see :func:`_shots`) and shot-independent model values."""
    values = {**_shots(columns, **per_shot), **{(None, c): v for c, v in (model or {}).items()}}
    return PaperRow(label, benchmark, backbone, values, row_value=row_value, reference=reference)


def _hsnet_rows(benchmark: str, columns: tuple[str, ...], per_backbone: dict[str, dict[str, list[float | None]]],
                **common: Any) -> tuple[PaperRow, ...]:
    """The "HSNet" rows of a table, one per backbone: {backbone: {"one": [...], "five": [...]}}."""
    return tuple(_row("HSNet", benchmark, backbone, columns, **common, **shots) for backbone, shots in
                 per_backbone.items())


PASCAL_COLUMNS = FOLD_COLUMNS + ("fbiou",)

TABLE1 = PaperTable(
    key="table1",
    studies={"main": None, "support_masking": (False,)},
    source="02_evaluate.ipynb (ignore_label on, per backbone and fold; grids: `evaluate-*`), "
           "08_no_support_masking.ipynb for the † row",
    title="Table 1: PASCAL-5i, mIoU and FB-IoU (with ignore_label)",
    benchmarks=("pascal",), shots=(1, 5), columns=PASCAL_COLUMNS, model_columns=("params_M",),
    row_field="support_masking", row_labels={True: "HSNet", False: "HSNet† (no support masking)"},
    rows=(
        *_hsnet_rows("pascal", PASCAL_COLUMNS, {
            "vgg16": {"one": [59.6, 65.7, 59.6, 54.0, 59.7, 73.4], "five": [64.9, 69.0, 64.1, 58.6, 64.1, 76.6]},
            "resnet50": {"one": [64.3, 70.7, 60.3, 60.5, 64.0, 76.7], "five": [70.3, 73.2, 67.4, 67.1, 69.5, 80.6]},
            "resnet101": {"one": [67.3, 72.3, 62.0, 63.1, 66.2, 77.6], "five": [71.8, 74.4, 67.0, 68.3, 70.4, 80.6]},
        }, row_value=True, model={"params_M": 2.6}),
        _row("HSNet†", "pascal", "resnet101", PASCAL_COLUMNS, row_value=False, model={"params_M": 2.6},
             one=[66.2, 69.5, 53.9, 56.2, 61.5, 72.5], five=[68.9, 71.9, 56.3, 57.9, 63.7, 73.8]),
    ),
    notes="† = without support feature masking (Eq. 1), in training and testing. "
          "ResNet50/101 '# learnable params' from Tables A6/A7.",
)

TABLE2 = PaperTable(
    key="table2",
    source="02_evaluate.ipynb on COCO-20i (grids/paper.toml: `coco-evaluate-*`)",
    title="Table 2: COCO-20i, mIoU and FB-IoU",
    benchmarks=("coco",), shots=(1, 5), columns=PASCAL_COLUMNS, ignore_label=None,
    rows=_hsnet_rows("coco", PASCAL_COLUMNS, {
        "resnet50": {"one": [36.3, 43.1, 38.7, 38.7, 39.2, 68.2], "five": [43.3, 51.3, 48.2, 45.0, 46.9, None]},
        "resnet101": {"one": [37.2, 44.1, 42.4, 41.3, 41.2, 69.1], "five": [45.9, 53.0, 51.8, 47.1, 49.5, None]},
    }),
    notes="5-shot FB-IoU is missing from the paper's markdown transcription (see hsnetlib.results.paper.MISSING).",
)

TABLE3 = PaperTable(
    key="table3",
    source="02_evaluate.ipynb on FSS-1000 (grids/paper.toml: `fss-evaluate-*`)",
    title="Table 3: FSS-1000, mIoU",
    benchmarks=("fss",), shots=(1, 5), columns=("mean",), ignore_label=None,
    rows=_hsnet_rows("fss", ("mean",), {
        "vgg16": {"one": [82.3], "five": [None]},
        "resnet50": {"one": [85.5], "five": [87.8]},
        "resnet101": {"one": [86.5], "five": [None]},
    }),
    notes="FSS-1000 has one test split (240 classes): 'mean' is its mIoU. VGG16 and ResNet101 5-shot values "
          "are missing from the paper's markdown transcription (see hsnetlib.results.paper.MISSING).",
)

TABLE4 = PaperTable(
    key="table4",
    studies={"kernel": None},
    source="05_ablation_kernel.ipynb (mIoU per kernel, and size / time / memory / FLOPs)",
    title="Table 4: 4D kernels (PASCAL-5i, ResNet101): mIoU, model size, time, memory, FLOPs",
    benchmarks=("pascal",), shots=(1, 5), columns=FOLD_COLUMNS, model_columns=MODEL_COLUMNS,
    row_field="kernel",
    row_labels={"original": "Original 4D kernel [55]", "separable": "Separable 4D kernel [77]",
                "center_pivot": "Center-pivot 4D kernel (ours)"},
    rows=(
        _row("Original 4D kernel [55]", "pascal", "resnet101", FOLD_COLUMNS, row_value="original",
             model={"params_M": 11.3, "time_ms": 512.17, "memory_gb": 4.12, "gflops": 702.35},
             one=[64.5, 71.4, 62.3, 61.7, 64.9], five=[70.8, 74.8, 67.4, 67.5, 70.1]),
        _row("Separable 4D kernel [77]", "pascal", "resnet101", FOLD_COLUMNS, row_value="separable",
             model={"params_M": 4.4, "time_ms": 28.48, "memory_gb": 1.50, "gflops": 28.40},
             one=[66.1, 72.0, 63.2, 62.6, 65.9], five=[71.2, 74.1, 67.2, 68.1, 70.2]),
        _row("Center-pivot 4D kernel (ours)", "pascal", "resnet101", FOLD_COLUMNS, row_value="center_pivot",
             model={"params_M": 2.6, "time_ms": 25.51, "memory_gb": 1.39, "gflops": 20.56},
             one=[67.3, 72.3, 62.0, 63.1, 66.2], five=[71.8, 74.4, 67.0, 68.3, 70.4]),
    ),
    notes="Time, memory and FLOPs: 1-shot, per episode, ResNet101 at 400x400, Intel i7-7820X + NVIDIA Titan-XP. "
          "Ours are measured wherever the run ran (see the run's device); compare ratios between kernels, "
          "not absolute values, across machines.",
)

TABLE_A1 = PaperTable(
    key="tableA1",
    source="02_evaluate.ipynb with ignore_label=false (grids: `evaluate-noignore-*`)",
    title="Table A1: PASCAL-5i without ignore_label, mIoU and FB-IoU",
    benchmarks=("pascal",), shots=(1, 5), columns=PASCAL_COLUMNS, model_columns=("params_M",),
    ignore_label=False,
    rows=_hsnet_rows("pascal", PASCAL_COLUMNS, {
        "vgg16": {"one": [53.6, 61.7, 55.0, 50.3, 55.2, 70.5], "five": [58.3, 64.7, 58.9, 54.6, 59.1, 73.5]},
        "resnet50": {"one": [57.4, 66.8, 55.8, 56.5, 59.1, 73.8], "five": [62.6, 69.2, 62.5, 62.4, 64.2, 77.4]},
        "resnet101": {"one": [60.1, 67.8, 57.3, 59.0, 61.1, 74.4], "five": [63.9, 69.9, 62.0, 63.6, 64.8, 77.1]},
    }, model={"params_M": 2.6}),
    notes="Boundary pixels (255) count as background instead of being ignored.",
)

TABLE_A2 = PaperTable(
    key="tableA2",
    source="02_evaluate.ipynb with nshot 1, 5, 10 (ResNet50)",
    title="Table A2: K-shot mIoU (K = 1, 5, 10), ResNet50",
    benchmarks=("pascal", "coco"), shots=(1, 5, 10), columns=("mean",),
    rows=(
        _row("HSNet", "pascal", "resnet50", ("mean",), one=[64.0], five=[69.5], ten=[70.6]),
        _row("HSNet", "coco", "resnet50", ("mean",), one=[39.2], five=[46.9], ten=[48.7]),
    ),
    notes="mIoU averaged over the four folds.",
)

def _ablation_table(key: str, study: str, row_field: str, source: str, title: str, figure: str,
                    row_labels: dict[Any, str], per_value: dict[Any, dict[str, list[float | None]]],
                    notes: str) -> PaperTable:
    """An ablation's table (PASCAL-5i, ResNet101, mIoU per fold, 1 and 5 shots): one row per value of ``row_field``
    (the option ``study`` varies), labelled by ``row_labels``, from {value: {"one": [...], "five": [...]}}."""
    return PaperTable(
        key=key, studies={study: None}, source=source, title=title,
        benchmarks=("pascal",), shots=(1, 5), columns=FOLD_COLUMNS, figure=figure,
        row_field=row_field, row_labels=row_labels,
        rows=tuple(_row(row_labels[value], "pascal", "resnet101", FOLD_COLUMNS, row_value=value, **shots)
                   for value, shots in per_value.items()),
        notes=notes,
    )


TABLE_A3 = _ablation_table(
    "tableA3", "hypercorrelation", "hypercorrelation", "03_ablation_hypercorrelation.ipynb",
    "Table A3 / Figure 6: hypercorrelation ablation (PASCAL-5i, ResNet101), mIoU", "fig6",
    {"shallow": "C_p^shallow", "deep": "C_p^deep", "full": "C_p (ours)"},
    {"shallow": {"one": [57.1, 64.7, 57.5, 57.0, 59.1], "five": [63.7, 69.8, 66.0, 63.4, 65.7]},
     "deep": {"one": [60.6, 68.6, 58.2, 59.2, 61.7], "five": [66.7, 72.0, 65.9, 65.4, 67.5]},
     "full": {"one": [67.3, 72.3, 62.0, 63.1, 66.2], "five": [71.8, 74.4, 67.0, 68.3, 70.4]}},
    notes="Single-channel hypercorrelations from the shallowest / deepest layer of each pyramid level.",
)

TABLE_A4 = _ablation_table(
    "tableA4", "pyramid", "pyramid", "04_ablation_pyramid.ipynb",
    "Table A4 / Figure 7: pyramid-layer ablation (PASCAL-5i, ResNet101), mIoU", "fig7",
    {(3,): "C^(3)", (2, 3): "C^(2:3)", (1, 2, 3): "C (ours)"},
    {(3,): {"one": [54.3, 62.8, 52.0, 52.8, 55.5], "five": [60.2, 67.0, 59.4, 59.9, 61.6]},
     (2, 3): {"one": [64.3, 70.3, 60.5, 60.4, 63.9], "five": [69.7, 73.2, 65.2, 64.9, 68.2]},
     (1, 2, 3): {"one": [67.3, 72.3, 62.0, 63.1, 66.2], "five": [71.8, 74.4, 67.0, 68.3, 70.4]}},
    notes="Pyramid levels p = 1 (finest) .. 3 (deepest) fed to the encoder.",
)

CDFSS_TARGETS = ("deepglobe", "isic", "lung", "fss")
CDFSS_COLUMNS = (*CDFSS_TARGETS, "mean")

CDFSS = PaperTable(
    key="cdfss",
    source="02_evaluate.ipynb on each target with the one model trained on pascal-all and selected on FSS-1000 "
           "val (grids/cdfss.toml)",
    title="Cross-domain (PATNet Table 1): trained on PASCAL VOC (all 20 classes), mIoU on Deepglobe, ISIC2018, "
          "Chest X-ray, FSS-1000",
    benchmarks=CDFSS_TARGETS, shots=(1, 5), columns=CDFSS_COLUMNS, ignore_label=None, layout="targets",
    train_benchmark="pascal-all", paper_backbones_only=False, decimals=2,
    rows=(
        _row("HSNet", "pascal-all", "resnet50", CDFSS_COLUMNS,
             one=[29.65, 31.20, 51.88, 77.53, 47.57], five=[35.08, 35.10, 54.36, 80.99, 51.38]),
        _row("PATNet (with test-time fine-tuning)", "pascal-all", "resnet50", CDFSS_COLUMNS, reference=True,
             one=[37.89, 41.16, 66.61, 78.59, 56.06], five=[42.97, 53.58, 70.20, 81.23, 61.99]),
    ),
    notes="Published rows: PATNet's Table 1 (ResNet-50, trained on PASCAL), as reprinted by later CD-FSS papers "
          "(a secondary source, cross-checked; see the CD-FSS protocol, section 6). PATNet's row is for reference "
          "only: its numbers include per-episode test-time fine-tuning, which HSNet does not do, so ours are "
          "compared with HSNet's row only. `mean` averages the four targets (every target needed). Chest X-ray "
          "has one class: its mIoU is the foreground IoU pooled over the 600 episodes.",
)

TABLES: dict[str, PaperTable] = {t.key: t for t in (TABLE1, TABLE2, TABLE3, TABLE4, TABLE_A1, TABLE_A2,
                                                      TABLE_A3, TABLE_A4, CDFSS)}
PAPER_BACKBONES = tuple(dict.fromkeys(row.backbone for table in TABLES.values() for row in table.rows))


def backbones_table(backbones: tuple[str, ...]) -> PaperTable:
    """"HSNet across backbones": the paper's ResNet50/101 rows of Tables 1 and 2 beside one line per backbone of
    `backbones` (the paper has no number for them: a line without a run reads "no run")."""
    published = {b: tuple(r for r in t.rows if r.backbone in ("resnet50", "resnet101") and r.row_value is not False)
                 for b, t in (("pascal", TABLE1), ("coco", TABLE2))}
    rows = tuple(row for benchmark, paper_rows in published.items() for row in
                 (*paper_rows, *(PaperRow("HSNet", benchmark, name, {}) for name in backbones)))
    return PaperTable(
        key="backbones",
        source="02_evaluate.ipynb per backbone (grids/backbones.toml)",
        title="HSNet across backbones: PASCAL-5i and COCO-20i, mIoU and FB-IoU",
        benchmarks=("pascal", "coco"), shots=(1, 5), columns=PASCAL_COLUMNS, rows=rows, paper_backbones_only=False,
        notes="ResNet50/101 rows: the paper's Tables 1 and 2. The other backbones have no published HSNet "
              "numbers: their lines read `no run` until grids/backbones.toml has run them. The synthetic demo "
              "lines (grids/demo-backbones.toml: random frozen weights, fold 0, 64 px; the ViTs 56 px) show each "
              "backbone end to end, not a ranking. A random ViT/14 at 56 px gives 4 x 4 tokens at every level: "
              "its hypercorrelation squeezes to a 1 x 1 support grid and HSNet predicts an 8 x 8 mask (7 px cells), "
              "so it can at best place a shape coarsely by colour and texture (its random patch projection keeps "
              "them) and cannot draw the shapes' boundaries, which ResNet50 at 64 px resolves on 16 x 16 (4 px). "
              "Measured at a 1-step budget (8 training episodes): every backbone, ResNet50 and the ViTs included, "
              "stayed at the all-background solution (validation mIoU 0; all-foreground 8.4), far below the "
              "1,200-1,600 episodes the demo's ResNet50 variants need to leave it (grids/demo-ablations.toml).",
    )

# Figures with numbers only in plots, and the notebooks whose runs draw them.
FIGURE_SOURCES = {
    "fig9": "06_ablation_block_layers.ipynb (evaluations, and the training histories of each variant)",
    "fig10": "07_ablation_finetune.ipynb (the training histories of both variants, per fold)",
}
FIGURES_WITHOUT_NUMBERS = {
    "fig9": "Figure 9 (mIoU and model size vs. number of 4D layers per block, PASCAL-5i, ResNet101): "
            "the paper gives no numbers in the text; it states that accuracy improves up to three layers "
            "and then saturates.",
    "fig10": "Figure 10 (training/validation mIoU per epoch, fine-tuned vs. frozen backbone, every PASCAL-5i fold): "
             "curves only; the fine-tuned backbone (lr 1e-5) overfits.",
}

# Cells the markdown transcription of the paper lost (see the module docstring).
MISSING: tuple[tuple[str, str, str, int, str], ...] = (
    ("table2", "coco", "resnet50", 5, "fbiou"),
    ("table2", "coco", "resnet101", 5, "fbiou"),
    ("table3", "fss", "vgg16", 5, "mean"),
    ("table3", "fss", "resnet101", 5, "mean"),
)


def paper_frame() -> pd.DataFrame:
    """Every published number as one long frame: table, benchmark, backbone, row, row_value, shot, column, value."""
    records = []
    for table in TABLES.values():
        for row in table.rows:
            for (shot, column), value in row.values.items():
                records.append({"table": table.key, "benchmark": row.benchmark, "backbone": row.backbone,
                                "row": row.label, "row_value": row.row_value, "shot": shot, "column": column,
                                "value": value})
    return pd.DataFrame.from_records(records)
