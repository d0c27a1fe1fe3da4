"""Rewards of the registration environment: Dice improvement on labels or on k-means pseudo-segmentations."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from rli2it_med.registration.metrics import dice_per_label

__all__ = ["kmeans_labels", "mean_dice"]


def kmeans_labels(image: torch.Tensor, k: int = 3, iterations: int = 20) -> torch.Tensor:
    """Intensity k-means pseudo-segmentation, one clustering per batch item.

    Centroids start at evenly spaced quantiles (deterministic) and labels are ordered by centroid intensity,
    so label 0 is the darkest class (the background of a skull-stripped MRI).

    Args:
        image: (B, 1, *S) intensities.
        k: number of clusters.
        iterations: Lloyd iterations.

    Returns:
        (B, 1, *S) int64 labels in ``0..k-1``.
    """
    if image.ndim < 4 or image.shape[1] != 1:
        raise ValueError(f"expected an image of shape (B, 1, H, W[, D]), got {tuple(image.shape)}")
    flat = image.flatten(1).float()  # (B, N)
    quantiles = torch.linspace(0.5 / k, 1 - 0.5 / k, k, device=image.device)
    sample = flat[:, :: max(1, flat.shape[1] // 200_000)]
    centroids = torch.quantile(sample, quantiles, dim=1).T.contiguous()  # (B, k)
    for _ in range(iterations):
        assign = (flat.unsqueeze(-1) - centroids.unsqueeze(1)).abs().argmin(-1)  # (B, N)
        one_hot = torch.nn.functional.one_hot(assign, k).float()
        counts = one_hot.sum(1)
        sums = (one_hot * flat.unsqueeze(-1)).sum(1)
        centroids = torch.where(counts > 0, sums / counts.clamp_min(1), centroids)
    order = centroids.argsort(dim=1)
    rank = order.argsort(dim=1)  # rank[b, cluster] = position of that cluster by intensity
    assign = (flat.unsqueeze(-1) - centroids.unsqueeze(1)).abs().argmin(-1)
    return rank.gather(1, assign).view_as(image).long()


def mean_dice(pred: torch.Tensor, target: torch.Tensor, labels: Sequence[int]) -> torch.Tensor:
    """Mean Dice over ``labels`` ignoring labels absent from both maps, shape (B,)."""
    return dice_per_label(pred, target, labels).nanmean(1).nan_to_num(0.0)
