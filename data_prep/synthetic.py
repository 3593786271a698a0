"""Write a synthetic few-shot benchmark in the real FSS-1000, PASCAL VOC2012, COCO-20i or CD-FSS layouts.

    python -m data_prep.synthetic --root data/synthetic --layout both --seed 0   # fss and pascal
    python -m data_prep.synthetic --root data/synthetic --layout all             # every layout

The loaders then read it like the real data with `splits_dir=ROOT/splits` (see hsnetlib.synthetic).
"""
from __future__ import annotations

import argparse
import sys

from data_prep import script_parser
from hsnetlib.synthetic import LAYOUTS, generate


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = script_parser("data_prep.synthetic", __doc__)
    parser.add_argument("--root", required=True, help="data root to write FSS-1000/, VOC2012/, splits/ and synthetic.json under")
    parser.add_argument("--layout", choices=(*LAYOUTS, "both", "all"), default="both",
                        help="one layout, both (fss and pascal) or all")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--n-classes", type=int, default=None, help="FSS classes (default 20); the other layouts have their benchmark's")
    parser.add_argument("--images-per-class", type=int, default=10, help="FSS, CD-FSS sets: images per class; PASCAL, COCO: trn images per class")
    parser.add_argument("--val-images-per-class", type=int, default=None, help="PASCAL, COCO val images per class (default: --images-per-class)")
    parser.add_argument("--size", type=int, default=96, help="longer image side in pixels")
    parser.add_argument("--second-object-prob", type=float, default=0.7, help="probability of a second object of another class")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    several = args.layout in ("both", "all")
    layouts = {"both": ("fss", "pascal"), "all": LAYOUTS}.get(args.layout, (args.layout,))
    for layout in layouts:
        try:
            manifest = generate(
                args.root, layout,
                # with several layouts, the FSS-only and PASCAL/COCO-only options go to their own layouts
                n_classes=args.n_classes if not several or layout == "fss" else None,
                images_per_class=args.images_per_class,
                val_images_per_class=args.val_images_per_class if not several or layout in ("pascal", "coco") else None,
                size=args.size, second_object_prob=args.second_object_prob, seed=args.seed, progress=True,
            )
        except (ValueError, FileExistsError) as error:
            print(f"error: {error}", file=sys.stderr)
            return 2
        print(f"{layout}: {manifest['counts']} -> {manifest['root']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
