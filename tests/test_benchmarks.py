"""The benchmark registry: every registered benchmark builds on generated data in its layout and yields
episodes of the right shapes (parametrized over list_benchmarks(), so a registration is tested without a
new test); unknown names list the registered ones; a benchmark registered from outside works."""
import dataclasses

import pytest

from hsnetlib import synthetic
from hsnetlib.data import (
    BenchmarkSpec, FolderLayout, build_dataset, get_benchmark, list_benchmarks, register_benchmark, unregister_benchmark,
)

SHOT, SIZE = 2, 32


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    """Per synthetic layout, a small generated tree (made on first use)."""
    made = {}

    def get(layout):
        if layout not in made:
            root = tmp_path_factory.mktemp(f"syn-{layout}")
            options = dict(images_per_class=2 if layout == "coco" else 3, size=32)
            if layout == "fss":
                options["n_classes"] = 6
            made[layout] = (root, synthetic.generate(root, layout, seed=0, **options))
        return made[layout]
    return get


def _build(spec, root, manifest, split, **kwargs):
    if spec.needs_class_split:  # a user's folder: the synthetic FSS classes, split as generated
        return build_dataset(spec.name, root / "FSS-1000", 0, split, SHOT, img_size=SIZE,
                             class_split=manifest["class_split"], **kwargs)
    return build_dataset(spec.name, root, 0, split, SHOT, img_size=SIZE, splits_dir=root / "splits", **kwargs)


@pytest.mark.parametrize("name", list_benchmarks())
def test_every_registered_benchmark_builds_and_yields_episodes(name, generated):
    spec = get_benchmark(name)
    assert spec.synthetic in synthetic.LAYOUTS, f"{name}: no synthetic layout generates its data"
    root, manifest = generated(spec.synthetic)
    for split in spec.splits:
        dataset = _build(spec, root, manifest, split, episodes=3)
        assert len(dataset) == 3 and dataset.config.options == spec.resolve_options(None)
        if spec.class_names is not None:
            assert dataset.class_names == list(spec.class_names)
        for i in range(len(dataset)):
            item = dataset[i]
            assert item["query_img"].shape == (3, SIZE, SIZE) and item["query_mask"].shape == (SIZE, SIZE)
            assert item["support_imgs"].shape == (SHOT, 3, SIZE, SIZE) and item["support_masks"].shape == (SHOT, SIZE, SIZE)
            assert item["class_id"] in dataset.class_ids and item["query_name"] not in item["support_names"]
            assert ("query_ignore_idx" in item) == spec.scoring.ignore_label
    if "test" in spec.splits:
        full = _build(spec, root, manifest, "test")
        n_queries = len(full.index.queries) or sum(map(len, full.index.candidates.values()))
        assert len(full) == (spec.test_episodes or n_queries)
        assert full.describe()["label"] == spec.label and full.describe()["n_episodes"] == len(full)


def test_registered_specs():
    assert list_benchmarks()[:4] == ["pascal", "coco", "fss", "folder"]
    assert {"pascal-all", "deepglobe", "isic", "lung"} <= set(list_benchmarks())
    counts = {n: get_benchmark(n).test_episodes for n in ("pascal", "coco", "fss", "deepglobe", "isic", "lung")}
    assert counts == {"pascal": 1000, "coco": 1000, "fss": None, "deepglobe": 600, "isic": 600, "lung": 600}
    assert [get_benchmark(n).nfolds for n in ("pascal", "coco", "fss", "pascal-all")] == [4, 4, 1, 1]
    assert list(get_benchmark("coco").class_split(1)) == [1 + 4 * v for v in range(20)]
    assert get_benchmark("folder").paper_tables == () and get_benchmark("pascal-all").paper_tables == ()
    assert all("cdfss" in get_benchmark(n).paper_tables for n in ("deepglobe", "isic", "lung", "fss"))


def test_pascal_all_trains_on_the_four_lists_joined(generated):
    root, _ = generated("pascal")
    everything = build_dataset("pascal-all", root, 0, "trn", 1, img_size=SIZE, splits_dir=root / "splits")
    lines = [line for f in range(4) for line in (root / "splits/pascal/trn" / f"fold{f}.txt").read_text().split()]
    assert [f"{n}__{c + 1:02d}" for n, c in everything.index.queries] == lines
    assert everything.class_ids == list(range(20)) and len(everything) == len(lines)
    with pytest.raises(ValueError, match="fold=1 out of range for pascal-all \\(0..0\\)"):
        build_dataset("pascal-all", root, 1, "trn", 1, splits_dir=root / "splits")


def test_unknown_names_and_duplicates():
    with pytest.raises(ValueError, match="unknown benchmark 'voc'; registered: pascal, coco, fss, folder, pascal-all"):
        get_benchmark("voc")
    with pytest.raises(ValueError, match="'pascal' is already registered"):
        register_benchmark(get_benchmark("pascal"))


def test_a_benchmark_registered_from_outside(generated):
    root, manifest = generated("fss")
    spec = BenchmarkSpec(name="toy-folder", label="Toy", layout=FolderLayout, needs_class_split=True, test_episodes=7)
    register_benchmark(spec)
    try:
        dataset = build_dataset("toy-folder", root / "FSS-1000", 0, "test", 1, img_size=SIZE,
                                class_split=manifest["class_split"])
        assert len(dataset) == 7 and dataset.spec is spec and dataset.describe()["label"] == "Toy"
        rebuilt = dataset.with_episodes(shot=2)
        assert rebuilt.shot == 2 and len(rebuilt) == 7
        assert register_benchmark(dataclasses.replace(spec, test_episodes=3), replace=True).test_episodes == 3
    finally:
        unregister_benchmark("toy-folder")
