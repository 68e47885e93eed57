"""The joint compression + denoising codec: Cheng2020Anchor with a denoising analysis."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from compressai.models import Cheng2020Anchor
from torch import Tensor, nn

from jicd.errors import UserError
from jicd.models.denoisers import build_denoisers
from jicd.models.entropy import SyncFreeEntropyBottleneck

PROJ_HIDDEN = 128  # width of the projection MLP's hidden layer (docs/method.md: N → 128 → proj_dim)
AUTHORS_WIDTH = 64  # the authors' head is Linear(64, ·) on the ga0 width: 256-px patches / 4


def _mlp(in_features: int, proj_dim: int) -> nn.Sequential:
    """Linear in→128 → ReLU → Linear 128→proj_dim (both heads; keys ``mlp.0`` / ``mlp.2``)."""
    return nn.Sequential(
        nn.Linear(in_features, PROJ_HIDDEN), nn.ReLU(inplace=True), nn.Linear(PROJ_HIDDEN, proj_dim)
    )


class ProjectionHead(nn.Module):
    """Contrastive projection head: global average pool → Linear N→128 → ReLU → Linear → L2-norm.

    Shapes: ``(B, N, H, W)`` → ``(B, proj_dim)``, rows of unit length.
    """

    def __init__(self, channels: int, proj_dim: int = 128):
        super().__init__()
        self.mlp = _mlp(channels, proj_dim)

    def forward(self, feature: Tensor) -> Tensor:
        return F.normalize(self.mlp(feature.mean(dim=(2, 3))), dim=1)


class AuthorsProjectionHead(nn.Module):
    """The projection head of the authors' code (JICDCS ``projection_head``), as an option.

    ``Linear(64, 128) → ReLU → Linear(128, proj_dim)`` applied along the **width** axis of the
    ga0 map, then an average over height and the projected axis; no L2 normalisation. The
    result has one value per latent channel, so ``proj_dim`` is averaged away.

    Shapes: ``(B, N, H, 64)`` → ``(B, N)`` (a 256-pixel patch gives a 64×64 ga0 map).

    Raises:
        UserError: the map is not 64 wide (any patch size but 256).
    """

    def __init__(self, proj_dim: int = 128):
        super().__init__()
        self.mlp = _mlp(AUTHORS_WIDTH, proj_dim)

    def forward(self, feature: Tensor) -> Tensor:
        if feature.size(-1) != AUTHORS_WIDTH:
            raise UserError(
                f"model.head=authors works on 256-pixel patches only (ga0 width 64), got "
                f"{4 * feature.size(-1)}-pixel-wide input; use data.patch_size=256 or "
                "model.head=paper"
            )
        return self.mlp(feature).mean(dim=(2, 3))


class JointDenoisingCodec(Cheng2020Anchor):
    """Cheng2020Anchor whose analysis transform denoises its latents (three-branch training).

    Xie, Yu, Pakdaman, Gabbouj, "Joint End-to-End Image Compression and Denoising: Leveraging
    Contrastive Learning and Multi-Scale Self-ONNs", ICIP 2024 (arXiv 2402.05582), extending
    Cheng, Xie, Chen, "Optimizing Image Compression via Joint Learning with Denoising", ECCV 2022.

    CompressAI's ``g_a`` is split into ``ga0 = g_a[0:3]`` and ``ga1 = g_a[3:7]`` (same layers, so
    cheng2020-anchor weights load by renaming) and ``g_a`` becomes a *method* running the denoising
    analysis; CompressAI's own ``compress``/``decompress`` therefore work unchanged and code only
    the denoising branch. Everything after ``g_a`` is the unchanged Cheng2020Anchor.

    .. code-block:: none

        noisy ─► ga0 ─► t0 ─► d0 ─► y0 ─► ga1 ─► t1 ─► d1 ─► y1 ─► entropy model ─► g_s ─► x_hat
                        └─► proj ─► p_noisy                         (h_a, EB, h_s, ctx, GC)
        clean ─► ga0 ─► y0_gt ─► ga1 ─► y1_gt        guidance: |y0 - y0_gt| + |y1 - y1_gt|
        augmented ─► ga0 ─► proj ─► p_aug            contrastive: NT-Xent(p_noisy, p_aug)

    Shapes: images ``(B, 3, H, W)`` (H, W multiples of 64); ``t0, y0, y0_gt`` ``(B, N, H/4, W/4)``;
    ``t1, y1, y1_gt`` ``(B, N, H/16, W/16)``; projections ``(B, proj_dim)`` (``(B, N)`` with
    the authors' head).

    Args:
        N: channels of every latent (128 for qualities 1-3, 192 for 4-6).
        denoiser: ``"cbam"`` (jicd D0/D1) or ``"attention"`` (baseline AttentionBlocks).
        contrastive: build the projection head (``proj`` is ``None`` otherwise).
        self_onn: Self-ONN residual units in D1.
        multi_scale: dilated multi-scale front end in D0 and D1.
        onn_q: Self-ONN order.
        proj_dim: output size of the projection head.
        head: ``"paper"`` (:class:`ProjectionHead`) or ``"authors"``
            (:class:`AuthorsProjectionHead`).
    """

    def __init__(
        self,
        N: int = 192,
        *,
        denoiser: str = "cbam",
        contrastive: bool = True,
        self_onn: bool = True,
        multi_scale: bool = True,
        onn_q: int = 3,
        proj_dim: int = 128,
        head: str = "paper",
    ):
        super().__init__(N=N)
        # The same module, with a forward that needs no host synchronisation (the class swap
        # keeps its parameters, buffers and the random draws of their initialisation).
        self.entropy_bottleneck.__class__ = SyncFreeEntropyBottleneck
        # Take g_a's layers out of the module tree so that self.g_a resolves to the method below.
        analysis = list(self._modules.pop("g_a"))
        self.ga0 = nn.Sequential(*analysis[:3])
        self.ga1 = nn.Sequential(*analysis[3:])
        self.d0, self.d1 = build_denoisers(denoiser, N, multi_scale, self_onn, onn_q)
        proj = None
        if contrastive:
            proj = (
                ProjectionHead(N, proj_dim) if head == "paper" else AuthorsProjectionHead(proj_dim)
            )
        self.register_module("proj", proj)

    @classmethod
    def from_state_dict(cls, state_dict: dict) -> JointDenoisingCodec:
        """Not supported: switches and N are not recoverable from weights alone.

        Use ``jicd.models.weights.load_for_inference`` (exports carry their ``ModelConfig``).
        """
        raise NotImplementedError(
            "JointDenoisingCodec.from_state_dict: use jicd.models.weights.load_for_inference"
        )

    def g_a(self, x: Tensor) -> Tensor:
        """Denoising analysis ``d1(ga1(d0(ga0(x))))``: ``(B, 3, H, W)`` → ``(B, N, H/16, W/16)``."""
        return self.d1(self.ga1(self.d0(self.ga0(x))))

    def forward(
        self, noisy: Tensor, clean: Tensor | None = None, augmented: Tensor | None = None
    ) -> dict:
        """Training/validation pass over the branches whose inputs are given.

        Args:
            noisy: ``(B, 3, H, W)`` noisy images in [0, 1], H and W multiples of 64.
            clean: ``(B, 3, H, W)`` clean images: adds ``guidance`` (guidance branch).
            augmented: ``(B, 3, H, W)`` positive views: adds ``proj`` when the head exists.

        Returns:
            ``{"x_hat": (B,3,H,W), "likelihoods": {"y", "z"}}`` plus
            ``"guidance": {"y0", "y0_gt": (B,N,H/4,W/4), "y1", "y1_gt": (B,N,H/16,W/16)}`` and
            ``"proj": {"noisy", "augmented": (B, proj_dim)}`` (``(B, N)`` with the authors'
            head) when those branches run.
        """
        use_aug = augmented is not None and self.proj is not None
        views = [noisy] + ([clean] if clean is not None else [])
        if use_aug and augmented is not None:  # use_aug implies it; the check narrows the type
            views.append(augmented)
        features = _shared(self.ga0, views)  # one pass over all views: same weights, fewer launches
        t0 = features[0]
        y0 = self.d0(t0)
        if clean is None:
            y1 = self.d1(self.ga1(y0))
        else:
            t1, y1_gt = _shared(self.ga1, [y0, features[1]])
            y1 = self.d1(t1)
        out = self._entropy_forward(y1)
        if clean is not None:
            out["guidance"] = {"y0": y0, "y0_gt": features[1], "y1": y1, "y1_gt": y1_gt}
        if use_aug:
            out["proj"] = {"noisy": self.proj(t0), "augmented": self.proj(features[-1])}
        return out

    def _entropy_forward(self, y: Tensor) -> dict:
        """Cheng2020Anchor's forward after ``g_a`` (JointAutoregressiveHierarchicalPriors.forward).

        Restated because the library method starts from the image;
        ``tests/library/test_models.py::test_entropy_path_is_cheng2020anchor`` checks it against
        ``Cheng2020Anchor.forward`` with the same weights.
        """
        z = self.h_a(y)
        z_hat, z_likelihoods = self.entropy_bottleneck(z)
        params = self.h_s(z_hat)
        y_hat = self.gaussian_conditional.quantize(y, "noise" if self.training else "dequantize")
        ctx_params = self.context_prediction(y_hat)
        gaussian_params = self.entropy_parameters(torch.cat((params, ctx_params), dim=1))
        scales_hat, means_hat = gaussian_params.chunk(2, 1)
        _, y_likelihoods = self.gaussian_conditional(y, scales_hat, means=means_hat)
        return {"x_hat": self.g_s(y_hat), "likelihoods": {"y": y_likelihoods, "z": z_likelihoods}}


def _shared(module: nn.Module, inputs: list[Tensor]) -> list[Tensor]:
    """Apply ``module`` once to the batch-concatenation of ``inputs`` and split the result back.

    Valid because the backbone has no batch statistics (no BatchNorm): per-sample results are
    identical to separate calls.
    """
    if len(inputs) == 1:
        return [module(inputs[0])]
    return list(module(torch.cat(inputs, dim=0)).split([t.size(0) for t in inputs], dim=0))
