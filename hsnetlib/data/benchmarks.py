"""The registered benchmarks: HSNet's three (hsnet-protocol.md), a user's folder, and CD-FSS (cdfss-protocol.md).

`paper_tables` are the keys of the published tables (hsnetlib.results): HSNet's "table1" ... "tableA4"
and "cdfss" (PATNet Table 1, the cross-domain benchmark).
"""
from __future__ import annotations

from hsnetlib.data.cdfss import (
    DEEPGLOBE_CLASSES, ISIC_CONVENTIONS, LUNG_MASK_POLICIES, DeepglobeLayout, IsicLayout, LungLayout,
)
from hsnetlib.data.layouts import COCO_CLASSES, PASCAL_CLASSES, CocoLayout, FolderLayout, FssLayout, PascalLayout
from hsnetlib.data.registry import BenchmarkOption, BenchmarkSpec, ScoringOptions, register_benchmark

CDFSS_TABLE = "cdfss"
CDFSS_TEST_EPISODES = 600  # the released code's default; the author once called 1,200 "the default setting"

register_benchmark(BenchmarkSpec(
    name="pascal", label="PASCAL-5i", layout=PascalLayout, nfolds=4, class_names=PASCAL_CLASSES,
    class_split=lambda fold: range(5 * fold, 5 * fold + 5), test_episodes=1000,
    scoring=ScoringOptions(ignore_label=True),
    paper_tables=("table1", "table4", "tableA1", "tableA2", "tableA3", "tableA4"), synthetic="pascal",
))
register_benchmark(BenchmarkSpec(
    name="coco", label="COCO-20i", layout=CocoLayout, nfolds=4, class_names=COCO_CLASSES,
    class_split=lambda fold: range(fold, 80, 4), test_episodes=1000,
    paper_tables=("table2", "tableA2"), synthetic="coco",
))
register_benchmark(BenchmarkSpec(
    name="fss", label="FSS-1000", layout=FssLayout, test_episodes=None,  # 2,400: every test image once
    paper_tables=("table3", CDFSS_TABLE), synthetic="fss",
))
register_benchmark(BenchmarkSpec(
    name="folder", label="own folder", layout=FolderLayout, needs_class_split=True, synthetic="fss",
))
register_benchmark(BenchmarkSpec(
    name="pascal-all", label="PASCAL VOC (all 20 classes)", layout=PascalLayout, class_names=PASCAL_CLASSES,
    class_split=lambda fold: (), splits=("trn",), scoring=ScoringOptions(ignore_label=True), synthetic="pascal",
    note="it trains on all 20 classes (the four fold training lists joined: CD-FSS source training), so "
         "PASCAL has no held-out classes to validate on; select the model on FSS-1000 val (val_benchmark='fss')",
))
register_benchmark(BenchmarkSpec(
    name="deepglobe", label="Deepglobe", layout=DeepglobeLayout,
    class_names=tuple(name for name, _ in DEEPGLOBE_CLASSES.values()), splits=("test",),
    test_episodes=CDFSS_TEST_EPISODES, paper_tables=(CDFSS_TABLE,), synthetic="deepglobe",
))
register_benchmark(BenchmarkSpec(
    name="isic", label="ISIC2018", layout=IsicLayout, splits=("test",), test_episodes=CDFSS_TEST_EPISODES,
    options={"isic_convention": BenchmarkOption(
        default="first-appearance", choices=tuple(ISIC_CONVENTIONS),
        help="class name of image folders 1/2/3: " + "; ".join(f"{k} = {'/'.join(v)}" for k, v in ISIC_CONVENTIONS.items()),
    )},
    paper_tables=(CDFSS_TABLE,), synthetic="isic",
))
register_benchmark(BenchmarkSpec(
    name="lung", label="Chest X-ray", layout=LungLayout, class_names=("lung",), splits=("test",),
    test_episodes=CDFSS_TEST_EPISODES,
    options={"lung_masks": BenchmarkOption(
        default="all", choices=LUNG_MASK_POLICIES,
        help="masks in the episode pool: all (704 in the Kaggle copy; a mask's image is its name without a "
             "trailing _mask) or mask-suffix (only NAME_mask.png, the 566 Shenzhen masks PATNet's loader can read)",
    )},
    paper_tables=(CDFSS_TABLE,), synthetic="lung",
))
