"""Episodic few-shot segmentation data: a registry of benchmarks, each read from its real directory layout.

    from hsnetlib.data import build_dataset, list_benchmarks, get_benchmark
    dataset = build_dataset("pascal", "data", fold=0, split="test", shot=1)

* `registry`: `BenchmarkSpec`, `register_benchmark`, `get_benchmark`, `list_benchmarks`.
* `benchmarks`: the registered ones -- pascal, coco, fss, folder (HSNet's protocol), pascal-all,
  deepglobe, isic, lung (the CD-FSS protocol).
* `layouts` (HSNet's directory layouts), `cdfss` (the CD-FSS target sets), `base` (readers, episodes,
  transforms), `dataset` (`FewShotDataset`, `build_dataset`).
"""
from hsnetlib.data.base import (
    DATA_HELP, IMAGE_EXTENSIONS, IMAGENET_MEAN, IMAGENET_STD, PAPER_IMG_SIZE, RESIZE_MODES, SHIPPED_SPLITS, SPLITS, DatasetConfig,
    Episode, EpisodeIndex, Layout, Loaded, draw, draw_episode, image_to_tensor, load_class_split, mask_to_tensor,
    natural_key, open_image, read_class_index_mask, read_grey_mask, read_rgb,
)
from hsnetlib.data.cdfss import DEEPGLOBE_CLASSES, ISIC_CONVENTIONS, LUNG_MASK_POLICIES, DeepglobeLayout, IsicLayout, LungLayout
from hsnetlib.data.dataset import FewShotDataset, build_dataset
from hsnetlib.data.layouts import COCO_CLASSES, PASCAL_CLASSES, CocoLayout, FolderLayout, FssLayout, PascalLayout
from hsnetlib.data.registry import (
    BenchmarkOption, BenchmarkSpec, ScoringOptions, get_benchmark, list_benchmarks, register_benchmark,
    unregister_benchmark,
)
from hsnetlib.data import benchmarks  # noqa: F401,E402  (registers the built-in benchmarks)

__all__ = [
    "DATA_HELP", "IMAGE_EXTENSIONS", "IMAGENET_MEAN", "IMAGENET_STD", "PAPER_IMG_SIZE", "RESIZE_MODES", "SHIPPED_SPLITS", "SPLITS",
    "DatasetConfig", "Episode", "EpisodeIndex", "Layout", "Loaded", "draw", "draw_episode", "image_to_tensor",
    "load_class_split", "mask_to_tensor", "natural_key", "open_image", "read_class_index_mask", "read_grey_mask", "read_rgb",
    "DEEPGLOBE_CLASSES", "ISIC_CONVENTIONS", "LUNG_MASK_POLICIES", "DeepglobeLayout", "IsicLayout", "LungLayout",
    "FewShotDataset", "build_dataset", "COCO_CLASSES", "PASCAL_CLASSES", "CocoLayout", "FolderLayout", "FssLayout",
    "PascalLayout", "BenchmarkOption", "BenchmarkSpec", "ScoringOptions", "get_benchmark", "list_benchmarks",
    "register_benchmark", "unregister_benchmark",
]
