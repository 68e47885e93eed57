"""Training objective (paper eq. 10) as a dict of named terms, and the global NT-Xent loss.

``L = R(y_hat) + R(z_hat) + λ_d·255²·MSE(x_hat, x) + λ_g·G + λ_c·L_CL``

Terms of a branch the model did not run (no ``guidance`` / ``proj`` in its output) are absent
from the dict, not zero, so logs never show a fake 0.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import cast

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

from jicd.distributed import get_rank, get_world_size
from jicd.errors import UserError
from jicd.metrics import image_bpp, ms_ssim_per_image

PIXEL_SCALE = 255.0**2  # distortion on the 8-bit scale, as CompressAI's RateDistortionLoss
DISTORTIONS = ("mse", "ms-ssim")
MS_SSIM_LAMBDAS = {1: 2.40, 2: 4.58, 3: 8.73, 4: 16.64, 5: 31.73, 6: 60.50}
"""λ of ``λ·(1 − MS-SSIM)`` per quality: the baseline's released MS-SSIM models (q2, q3, q5, q6,
its ``conf/train/multiscale-decomp_ms-ssim_q*.yml``), CompressAI's zoo values for q1 and q4."""


@dataclass
class LossConfig:
    """The ``loss`` section: weights of the terms of eq. 10."""

    lmbda: float | None = None
    """Rate-distortion weight λ_d; None = the value of ``model.quality`` (for ``ms-ssim`` the
    baseline's MS-SSIM λ of the quality)."""
    distortion: str = "mse"
    """``mse`` (λ·255²·MSE, the paper) or ``ms-ssim`` (λ·(1 − MS-SSIM), the baseline's MS-SSIM
    models) of the reconstruction against the clean image."""
    lambda_g: float = 3.0
    """Weight λ_g of the two-level guidance L1 loss."""
    lambda_c: float = 1.5
    """Weight λ_c of the contrastive NT-Xent loss (paper value)."""
    temperature: float = 0.07
    """NT-Xent temperature τ."""
    normalize: bool | None = None
    """L2-normalise the projections inside NT-Xent (cosine logits, the paper). None: true for
    ``model.head=paper``, false for ``authors`` (their code uses raw dot products; it also
    weighs the term with 0.5: pass ``loss.lambda_c=0.5``)."""

    def resolved_lmbda(self) -> float:
        """λ_d of a resolved config (``trainer.config.resolve_config`` fills ``lmbda`` in)."""
        if self.lmbda is None:
            raise ValueError("loss.lmbda is unset: resolve the config first (resolve_config)")
        return self.lmbda

    def __post_init__(self) -> None:
        if self.lmbda is not None and self.lmbda <= 0:
            raise UserError(f"loss.lmbda must be > 0, got {self.lmbda}")
        if self.lambda_g < 0 or self.lambda_c < 0:
            raise UserError("loss.lambda_g and loss.lambda_c must be >= 0")
        if self.temperature <= 0:
            raise UserError(f"loss.temperature must be > 0, got {self.temperature}")
        if self.distortion not in DISTORTIONS:
            raise UserError(
                f"loss.distortion: unknown {self.distortion!r}; choose one of {DISTORTIONS}"
            )


def rd_terms(
    likelihoods: dict[str, Tensor],
    x_hat: Tensor,
    clean: Tensor,
    lmbda: float,
    distortion: str = "mse",
) -> dict[str, Tensor]:
    """Per-image rate–distortion terms; the one definition shared by training and validation.

    Args:
        likelihoods: CompressAI's ``{"y": (B, M, h, w), "z": (B, N, h', w')}``.
        x_hat: reconstruction ``(B, 3, H, W)``.
        clean: target ``(B, 3, H, W)``.
        lmbda: λ_d.
        distortion: ``mse`` or ``ms-ssim``.

    Returns:
        ``(B,)`` tensors ``bpp_<latent>`` (one per likelihood), ``bpp``, ``mse``, ``distortion``
        (``λ·255²·MSE``, or ``λ·(1 − MS-SSIM)`` with ``ms_ssim`` also returned) and ``rd_loss``
        (``bpp + distortion``).
    """
    num_pixels = clean.size(2) * clean.size(3)
    terms = {f"bpp_{name}": image_bpp({name: lik}, num_pixels) for name, lik in likelihoods.items()}
    terms["bpp"] = cast(Tensor, sum(terms.values()))  # never empty: a model has y and z
    terms["mse"] = (x_hat.float() - clean.float()).pow(2).flatten(1).mean(dim=1)
    if distortion == "ms-ssim":
        terms["ms_ssim"] = ms_ssim_per_image(x_hat, clean)
        terms["distortion"] = lmbda * (1.0 - terms["ms_ssim"])
    else:
        terms["distortion"] = lmbda * PIXEL_SCALE * terms["mse"]
    terms["rd_loss"] = terms["bpp"] + terms["distortion"]
    return terms


def guidance_loss(guidance: dict[str, Tensor]) -> Tensor:
    """Two-level guidance ``G = mean|y0 − y0_gt| + mean|y1 − y1_gt|`` (paper eq. 5)."""
    level0 = F.l1_loss(guidance["y0"].float(), guidance["y0_gt"].float())
    return level0 + F.l1_loss(guidance["y1"].float(), guidance["y1_gt"].float())


class _GatherWithGradient(torch.autograd.Function):
    """``all_gather`` along dim 0 whose backward returns each rank the gradient of its own rows.

    Backward sums the gathered gradient over ranks (every rank's loss depends on every row), then
    keeps this rank's slice. With each rank's loss over its own anchors and the usual gradient
    averaging, the result equals the single-process gradient on the whole batch.
    """

    @staticmethod
    def forward(ctx, local: Tensor) -> Tensor:
        parts = [torch.empty_like(local) for _ in range(dist.get_world_size())]
        dist.all_gather(parts, local.contiguous())
        ctx.rows = local.size(0)
        return torch.cat(parts, dim=0)

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:
        grad = grad.contiguous()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        start = dist.get_rank() * ctx.rows
        return grad[start : start + ctx.rows]


def gather_with_gradient(local: Tensor) -> Tensor:
    """``(n, D)`` on each of W ranks → ``(W·n, D)`` in rank order; identity without a group."""
    if get_world_size() == 1:
        return local
    return _GatherWithGradient.apply(local)


def nt_xent(z_noisy: Tensor, z_aug: Tensor, temperature: float, normalize: bool = True) -> Tensor:
    """Symmetric NT-Xent (SimCLR) over the *global* batch (paper eq. 6).

    Each of the 2N projections (N noisy, N augmented views over all ranks) is an anchor whose
    positive is the other view of its image and whose negatives are the 2N − 2 others; the loss
    is the cross-entropy over the 2N − 1 candidates (self-similarity masked with −inf), with
    cosine similarity / τ as logits, in fp32. Under ``torch.distributed`` every rank scores its
    own 2n anchors against all 2N candidates and returns their mean: the mean over ranks equals
    the single-process loss on the concatenated batch, and so do the gradients after DDP's
    averaging. Every rank must pass the same n.

    With ``normalize=False`` the logits are raw dot products / τ (the authors' code).

    Args:
        z_noisy: ``(n, D)`` projections of this rank's noisy views.
        z_aug: ``(n, D)`` projections of the matching augmented views.
        temperature: τ.
        normalize: L2-normalise each projection first (cosine similarity).

    Returns:
        scalar tensor: mean loss over this rank's 2n anchors.
    """
    n = z_noisy.size(0)
    local = torch.cat([z_noisy, z_aug], dim=1).float().view(n, 2, -1)
    if normalize:
        local = F.normalize(local, dim=2)
    gathered = gather_with_gradient(local.flatten(1)).view(-1, 2, local.size(2))  # one collective
    return nt_xent_of_rows(gathered, get_rank() * n, n, temperature)


def nt_xent_of_rows(pairs: Tensor, first: int, count: int, temperature: float) -> Tensor:
    """Mean NT-Xent of the anchors of images ``first .. first+count-1`` against all 2N candidates.

    Args:
        pairs: ``(N, 2, D)`` projections (unit length for cosine logits), ``[:, 0]`` noisy and
            ``[:, 1]`` augmented.
        first: index of the first image whose two views are anchors.
        count: number of such images (2·count anchors).
        temperature: τ.
    """
    total = pairs.size(0)
    candidates = torch.cat([pairs[:, 0], pairs[:, 1]], dim=0)  # (2N, D): noisy views, then aug
    rows = torch.arange(first, first + count, device=pairs.device)
    anchors = torch.cat([rows, rows + total])  # (2n,) positions of the anchors among candidates
    positives = torch.cat([rows + total, rows])  # each anchor's other view
    logits = candidates[anchors] @ candidates.T / temperature  # (2n, 2N), fp32
    is_self = torch.zeros_like(logits, dtype=torch.bool)
    is_self[torch.arange(anchors.numel(), device=pairs.device), anchors] = True
    return F.cross_entropy(logits.masked_fill(is_self, float("-inf")), positives)


class JointLoss(nn.Module):
    """Eq. 10 of the paper as a dict of named scalar terms.

    Args:
        cfg: term weights and temperature.
        lmbda: λ_d actually used (``cfg.lmbda`` or the quality's value, resolved by the caller).
    """

    def __init__(self, cfg: LossConfig, lmbda: float):
        super().__init__()
        self.cfg, self.lmbda = cfg, lmbda

    def forward(self, output: dict, clean: Tensor) -> dict[str, Tensor]:
        """Loss terms for a model output against the clean batch ``(B, 3, H, W)``.

        Returns:
            ``bpp_y, bpp_z, bpp, mse, distortion, rd_loss`` always; ``guidance`` when the output
            has a guidance branch; ``contrastive`` when it has projections; ``loss`` (the total;
            CompressAI's ``aux_loss()`` is added by the trainer).
        """
        per_image = rd_terms(
            output["likelihoods"], output["x_hat"], clean, self.lmbda, self.cfg.distortion
        )
        terms = {name: value.mean() for name, value in per_image.items()}
        total = terms["rd_loss"]
        if "guidance" in output:
            terms["guidance"] = guidance_loss(output["guidance"])
            total = total + self.cfg.lambda_g * terms["guidance"]
        if "proj" in output:
            proj = output["proj"]
            normalize = self.cfg.normalize is not False  # None (unresolved): the paper's
            terms["contrastive"] = nt_xent(
                proj["noisy"], proj["augmented"], self.cfg.temperature, normalize
            )
            total = total + self.cfg.lambda_c * terms["contrastive"]
        terms["loss"] = total
        return terms
