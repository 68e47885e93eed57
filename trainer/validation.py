"""Validation: rate–distortion at the four fixed noise levels, reproducible across runs.

Sample ``i`` of the validation split gets noise level ``i % 4 + 1`` seeded with ``i``
(``jicd.noise.validation_noise``), so numbers compare across runs and resumes. Paired shards
(real noise, ``noise.kind: paired``) bring their own noisy image: those results are reported
under ``real`` (``psnr_real``, ``bpp_real``, …) instead of per level.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn
from torchvision.utils import make_grid

from data_pipeline.contract import ValBatch
from jicd import distributed as D
from jicd.metrics import ms_ssim_db, ms_ssim_per_image, psnr
from jicd.noise import validation_noise
from trainer.losses import rd_terms

NUM_LEVELS = 4
BUCKETS = [f"level{level + 1}" for level in range(NUM_LEVELS)] + ["real"]
REAL = len(BUCKETS) - 1
_FIELDS = ("count", "psnr", "ms_ssim", "bpp", "rd_loss")


@torch.no_grad()
def validate(
    model: nn.Module,
    loader: Iterable[ValBatch],
    lmbda: float,
    num_images: int,
    distortion: str = "mse",
) -> tuple[dict[str, float], dict[str, torch.Tensor]]:
    """Evaluate ``model`` (eval mode, quantised latents) on this rank's validation shard.

    Every rank calls this; sums are all-reduced once at the end, so ranks may hold different
    numbers of validation images.

    Returns:
        ``{"psnr_level1": …, "ms_ssim_level1": …, "bpp_level1": …, "rd_loss_level1": …, …,
        "psnr": …, "ms_ssim_db": …}`` averaged over the whole validation set (rd_loss with the
        run's ``distortion``; MS-SSIM is the primary metric of ``ms-ssim`` models), and on
        rank 0 the first ``K`` images as :func:`validation_rows` (an empty dict elsewhere).
    """
    was_training = model.training
    model.eval()
    sums = torch.zeros(len(BUCKETS), len(_FIELDS), dtype=torch.float64)
    shown: dict[tuple[int, int], torch.Tensor] = {}
    for batch in loader:
        clean, index = batch["clean"], batch["index"]
        paired = "noisy" in batch
        noisy = batch["noisy"] if paired else validation_noise(clean, index)
        out = model(noisy)
        x_hat = out["x_hat"].clamp(0, 1)
        terms = rd_terms(out["likelihoods"], x_hat, clean, lmbda, distortion)
        bpp = terms["bpp"]
        ms_ssim = terms["ms_ssim"] if "ms_ssim" in terms else ms_ssim_per_image(x_hat, clean)
        rows = torch.stack(
            [torch.ones_like(bpp), psnr(x_hat, clean), ms_ssim, bpp, terms["rd_loss"]]
        )
        bucket = torch.full_like(index.cpu(), REAL) if paired else index.cpu() % NUM_LEVELS
        sums.index_add_(0, bucket, rows.T.double().cpu())
        if D.is_main() and len(shown) < num_images:
            for i in range(min(num_images - len(shown), clean.shape[0])):
                key = (int(index[i]), int(bucket[i]))
                shown[key] = torch.stack([clean[i], noisy[i], x_hat[i]]).cpu()
    model.train(was_training)
    sums = D.all_reduce_sum(sums.to(D.device())).cpu()
    return summarise(sums), validation_rows(shown)


def validation_rows(shown: dict[tuple[int, int], torch.Tensor]) -> dict[str, torch.Tensor]:
    """One TensorBoard image per validation sample: clean | noisy | reconstruction, one row.

    Args:
        shown: ``(validation index i, bucket)`` → its ``(3, 3, P, P)`` clean, noisy,
            reconstruction (bucket: level − 1, or :data:`REAL` for a paired sample).

    Returns:
        ``val/level{L}/sample{i}`` (``L = i % 4 + 1``, the sample's noise level; ``val/real/…``
        for paired samples) → ``(1, 3, P + 4, 3·P + 8)``: the three images side by side, 2 px
        white borders.
    """
    return {
        f"val/{BUCKETS[bucket]}/sample{index}": make_grid(
            triplet, nrow=3, padding=2, pad_value=1.0
        )[None]
        for (index, bucket), triplet in sorted(shown.items())
    }


def summarise(sums: torch.Tensor) -> dict[str, float]:
    """Turn per-bucket sums ``(buckets, fields)`` into per-bucket and overall means."""
    results: dict[str, float] = {}
    counts = sums[:, 0]
    for bucket, label in enumerate(BUCKETS):
        if counts[bucket] == 0:
            continue
        for j, name in enumerate(_FIELDS[1:], start=1):
            results[f"{name}_{label}"] = float(sums[bucket, j] / counts[bucket])
    if counts.sum() > 0:
        for j, name in enumerate(_FIELDS[1:], start=1):
            results[name] = float(sums[:, j].sum() / counts.sum())
        results["ms_ssim_db"] = ms_ssim_db(results["ms_ssim"])
    results["num_images"] = float(counts.sum())
    return results
