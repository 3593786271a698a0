"""Fold-wise few-shot segmentation metrics: mIoU and FB-IoU as published, and a bootstrap interval.

Per episode, the binary prediction and the binary query mask give a foreground and a background
intersection and union (pixel counts). With the ignore label on, ignored pixels (PASCAL-5i's 255
boundary) count in neither; with it off (paper Table A1) the caller's ground truth already has
them as background, and they are scored like any other pixel.

The counts are summed per class over the fold's episodes. Then
  mIoU   = 100 * mean over the fold's classes of (foreground intersection / foreground union),
  FB-IoU = 100 * mean of (sum over the fold's classes of the foreground intersections / of the
           foreground unions) and the same ratio for the background.

Empty unions: a ratio whose union is 0 (a fold class with no episodes, or whose masks and
predictions are all empty) is taken as 0, i.e. the union is clamped to at least 1 as in the
published evaluator. Such a class still counts in the mean, so it lowers mIoU rather than being
silently dropped; `per_class` shows its union of 0 and its episode count.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd
import torch

AREA_COLUMNS = ("fg_inter", "fg_union", "bg_inter", "bg_union")


def episode_areas(pred: torch.Tensor, gt: torch.Tensor, ignore: torch.Tensor | None = None) -> torch.Tensor:
    """Per-episode (fg_inter, fg_union, bg_inter, bg_union) pixel counts, (B, 4) int64.

    pred, gt: (B, H, W) with values in {0, 1}; ignore: (B, H, W), nonzero = pixel not scored.
    """
    if pred.shape != gt.shape or pred.dim() != 3:
        raise ValueError(f"pred {tuple(pred.shape)} and gt {tuple(gt.shape)} must both be (B, H, W)")
    for name, t in (("pred", pred), ("gt", gt)):
        if ((t != 0) & (t != 1)).any():
            raise ValueError(f"{name} must hold only 0 and 1")
    pred, gt = pred.bool(), gt.bool()
    valid = torch.ones_like(pred) if ignore is None else ~ignore.bool()
    def count(mask: torch.Tensor) -> torch.Tensor:
        return (mask & valid).flatten(1).sum(1)
    return torch.stack(
        [count(pred & gt), count(pred | gt), count(~pred & ~gt), count(~pred | ~gt)], dim=1
    )


def ratio(inter: np.ndarray, union: np.ndarray) -> np.ndarray:
    """inter / union with the union clamped to >= 1 (an empty union gives 0)."""
    return inter / np.maximum(union, 1)


class IoUMeter:
    """Accumulates per-class intersections and unions over a fold's episodes."""

    def __init__(self, class_ids: Sequence[int], ignore_label: bool = True):
        self.class_ids = [int(c) for c in class_ids]
        if len(set(self.class_ids)) != len(self.class_ids) or not self.class_ids:
            raise ValueError(f"class_ids must be distinct and non-empty, got {class_ids}")
        self.ignore_label = ignore_label
        self._slot = {c: i for i, c in enumerate(self.class_ids)}
        self.sums = np.zeros((len(self.class_ids), 4), np.int64)  # per class: AREA_COLUMNS
        self.counts = np.zeros(len(self.class_ids), np.int64)  # episodes per class

    def update(
        self,
        pred: torch.Tensor,
        gt: torch.Tensor,
        class_ids: Sequence[int] | torch.Tensor,
        ignore: torch.Tensor | None = None,
    ) -> np.ndarray:
        """Add a batch of episodes: pred, gt (B, H, W) in {0, 1}; class_ids (B,); ignore (B, H, W)
        applied only when the meter's ignore_label is on. Returns their areas, (B, 4) int64."""
        areas = episode_areas(pred, gt, ignore if self.ignore_label else None).cpu().numpy()
        class_ids = [int(c) for c in class_ids]
        if len(class_ids) != len(areas):
            raise ValueError(f"{len(class_ids)} class ids for a batch of {len(areas)}")
        for class_id, row in zip(class_ids, areas):
            if class_id not in self._slot:
                raise ValueError(f"class {class_id} is not one of the meter's classes {self.class_ids}")
            self.sums[self._slot[class_id]] += row
            self.counts[self._slot[class_id]] += 1
        return areas

    @property
    def miou(self) -> float:
        """Mean foreground IoU over the fold's classes, in percent."""
        return float(ratio(self.sums[:, 0], self.sums[:, 1]).mean() * 100)

    @property
    def fbiou(self) -> float:
        """Mean of the foreground and background IoU of the sums over the fold's classes, in percent."""
        total = self.sums.sum(0)
        return float((ratio(total[0], total[1]) + ratio(total[2], total[3])) / 2 * 100)

    @property
    def per_class(self) -> pd.DataFrame:
        """One row per fold class: class_id, episodes, the summed areas, iou (foreground, percent)."""
        frame = pd.DataFrame(self.sums, columns=list(AREA_COLUMNS))
        frame.insert(0, "class_id", self.class_ids)
        frame.insert(1, "episodes", self.counts)
        frame["iou"] = ratio(self.sums[:, 0], self.sums[:, 1]) * 100
        return frame


def bootstrap_miou(
    fg_inter: np.ndarray,
    fg_union: np.ndarray,
    class_ids: np.ndarray,
    fold_classes: Sequence[int],
    groups: np.ndarray | None = None,
    n_boot: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> tuple[float, float]:
    """Percentile bootstrap interval of the fold mIoU (percent) over episodes.

    Each replicate resamples the episodes with replacement (within each group, e.g. each episode
    seed) and recomputes the fold mIoU from the resampled per-class sums; with groups the statistic
    is the mean over groups of their fold mIoU. Arrays are per episode, (N,).
    """
    rng = np.random.default_rng(seed)
    groups = np.zeros(len(fg_inter), np.int64) if groups is None else np.asarray(groups)
    slot = {c: i for i, c in enumerate(fold_classes)}
    onehot = np.zeros((len(fg_inter), len(slot)))  # (N, C)
    onehot[np.arange(len(fg_inter)), [slot[int(c)] for c in class_ids]] = 1
    replicates = np.zeros(n_boot)
    unique_groups = np.unique(groups)
    for group in unique_groups:
        members = np.flatnonzero(groups == group)
        weights = rng.multinomial(len(members), np.full(len(members), 1 / len(members)), size=n_boot)  # (n_boot, n)
        inter = weights @ (onehot[members] * fg_inter[members, None])  # (n_boot, C)
        union = weights @ (onehot[members] * fg_union[members, None])
        replicates += ratio(inter, union).mean(1) * 100 / len(unique_groups)
    alpha = (1 - level) / 2
    low, high = np.quantile(replicates, [alpha, 1 - alpha])
    return float(low), float(high)
