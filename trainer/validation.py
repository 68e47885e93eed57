"""Validation: rate–distortion at the four fixed noise levels, reproducible across runs.

Sample ``i`` of the validation split gets noise level ``i % 4 + 1`` seeded with ``i``
(``jicd.noise.validation_noise``), so numbers compare across runs and resumes.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import nn

from jicd import distributed as D
from jicd.metrics import psnr
from jicd.noise import validation_noise
from trainer.losses import rd_terms

NUM_LEVELS = 4
_FIELDS = ("count", "psnr", "bpp", "rd_loss")


@torch.no_grad()
def validate(
    model: nn.Module, loader: Iterable[dict[str, Any]], lmbda: float, num_images: int
) -> tuple[dict[str, float], torch.Tensor | None]:
    """Evaluate ``model`` (eval mode, quantised latents) on this rank's validation shard.

    Every rank calls this; sums are all-reduced once at the end, so ranks may hold different
    numbers of validation images.

    Returns:
        ``{"psnr_level1": …, "bpp_level1": …, "rd_loss_level1": …, …, "psnr": …}`` averaged over
        the whole validation set, and on rank 0 a ``(3·K, 3, P, P)`` grid of clean | noisy |
        reconstruction for the first ``K`` images (None elsewhere or when K = 0).
    """
    was_training = model.training
    model.eval()
    sums = torch.zeros(NUM_LEVELS, len(_FIELDS), dtype=torch.float64)
    shown: list[torch.Tensor] = []
    for batch in loader:
        clean, index = batch["clean"], batch["index"]
        noisy = validation_noise(clean, index)
        out = model(noisy)
        x_hat = out["x_hat"].clamp(0, 1)
        terms = rd_terms(out["likelihoods"], x_hat, clean, lmbda)
        bpp = terms["bpp"]
        rows = torch.stack([torch.ones_like(bpp), psnr(x_hat, clean), bpp, terms["rd_loss"]])
        sums.index_add_(0, (index.cpu() % NUM_LEVELS), rows.T.double().cpu())
        if D.is_main() and len(shown) < num_images:
            for i in range(min(num_images - len(shown), clean.shape[0])):
                shown.append(torch.stack([clean[i], noisy[i], x_hat[i]]).cpu())
    model.train(was_training)
    sums = D.all_reduce_sum(sums.to(D.device())).cpu()
    grid = torch.cat(shown) if shown else None
    return summarise(sums), grid


def summarise(sums: torch.Tensor) -> dict[str, float]:
    """Turn per-level sums ``(4, fields)`` into per-level and overall means."""
    results: dict[str, float] = {}
    counts = sums[:, 0]
    for level in range(NUM_LEVELS):
        if counts[level] == 0:
            continue
        for j, name in enumerate(_FIELDS[1:], start=1):
            results[f"{name}_level{level + 1}"] = float(sums[level, j] / counts[level])
    if counts.sum() > 0:
        for j, name in enumerate(_FIELDS[1:], start=1):
            results[name] = float(sums[:, j].sum() / counts.sum())
    results["num_images"] = float(counts.sum())
    return results
