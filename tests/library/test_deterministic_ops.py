"""``train.deterministic=true`` must not meet an op without a deterministic CUDA kernel.

The CPU cannot raise for those ops (their CPU kernels are deterministic), so the training step of
every preset is run under a dispatch mode that records each ATen op it calls, forward and
backward, and the record is compared with PyTorch's list of ops that raise under
``torch.use_deterministic_algorithms(True)`` on CUDA (the function's docstring lists them).
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils._python_dispatch import TorchDispatchMode

from jicd.models import build_model
from jicd.models.layers import ChannelAttention
from trainer.losses import JointLoss, LossConfig

# ATen names of the ops that raise on CUDA in deterministic mode (torch 2.14 docstring of
# torch.use_deterministic_algorithms, "will throw a RuntimeError when mode=True").
NONDETERMINISTIC_ON_CUDA = {
    "avg_pool3d_backward",
    "_adaptive_avg_pool2d_backward",
    "_adaptive_avg_pool3d_backward",
    "adaptive_max_pool2d_backward",
    "fractional_max_pool2d_backward",
    "fractional_max_pool3d_backward",
    "max_unpool2d",
    "max_unpool3d",
    "upsample_linear1d_backward",
    "upsample_bilinear2d_backward",
    "_upsample_bilinear2d_aa_backward",
    "upsample_bicubic2d_backward",
    "_upsample_bicubic2d_aa_backward",
    "upsample_trilinear3d_backward",
    "reflection_pad1d_backward",
    "reflection_pad2d_backward",
    "reflection_pad3d_backward",
    "nll_loss2d_forward",
    "_ctc_loss_backward",
    "_embedding_bag_backward",
    "_embedding_bag_dense_backward",
    "put_",
    "put",
    "histc",
    "bincount",
    "median",
    "nanmedian",
    "grid_sampler_2d_backward",
    "grid_sampler_3d_backward",
}
# scatter_reduce raises only with reduce="prod": checked on its arguments.
PROD_REDUCTIONS = {"scatter_reduce", "scatter_reduce_", "index_reduce", "index_reduce_"}

VARIANTS = [
    ("jicd", {}),
    ("jicd", {"self_onn": False}),
    ("jicd", {"multi_scale": False}),
    ("jicd", {"contrastive": False}),
    ("baseline", {}),
    ("anchor", {}),
]


class OpRecorder(TorchDispatchMode):
    """Records the overload packet name of every ATen op dispatched inside the block."""

    def __init__(self) -> None:
        super().__init__()
        self.ops: set[str] = set()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = func._overloadpacket.__name__
        if name in PROD_REDUCTIONS and "prod" in (*args, *kwargs.values()):
            name += "(prod)"
        self.ops.add(name)
        return func(*args, **kwargs)


def flagged(ops: set[str]) -> set[str]:
    return {op for op in ops if op in NONDETERMINISTIC_ON_CUDA or op.endswith("(prod)")}


def ops_of_training_step(model: nn.Module, patch: int = 64) -> set[str]:
    """ATen ops of one three-branch forward + loss + aux loss + backward on the CPU."""
    generator = torch.Generator().manual_seed(0)
    clean = torch.rand(2, 3, patch, patch, generator=generator)
    noisy = (clean + 0.1 * torch.randn(clean.shape, generator=generator)).clamp(0, 1)
    criterion = JointLoss(LossConfig(), lmbda=0.0067)
    recorder = OpRecorder()
    with recorder:
        output = model(noisy, clean, clean.flip(-1))
        terms = criterion(output, clean)
        (terms["loss"] + 1e-3 * model.aux_loss()).backward()
    return recorder.ops


@pytest.mark.parametrize(("preset", "flags"), VARIANTS)
def test_training_step_uses_only_ops_with_deterministic_cuda_kernels(preset, flags) -> None:
    torch.manual_seed(0)
    model = build_model(preset, 1, channels=16, **flags).train()
    ops = ops_of_training_step(model)
    assert "convolution_backward" in ops, "the recorder saw no backward ops"
    assert not flagged(ops), f"{preset} {flags}: {sorted(flagged(ops))}"


class AdaptivePoolChannelAttention(ChannelAttention):
    """The channel attention as it was: adaptive pooling (no deterministic CUDA backward)."""

    def forward(self, x: Tensor) -> Tensor:
        avg = self.mlp(F.adaptive_avg_pool2d(x, 1))
        peak = self.mlp(F.adaptive_max_pool2d(x, 1))
        return x * torch.sigmoid(avg + peak)


def test_the_recorder_catches_adaptive_max_pooling() -> None:
    # Without this, a recorder that saw nothing would pass the test above.
    old = AdaptivePoolChannelAttention(16)
    recorder = OpRecorder()
    with recorder:
        old(torch.rand(2, 16, 8, 8, requires_grad=True)).sum().backward()
    assert flagged(recorder.ops) == {"adaptive_max_pool2d_backward"}


def test_channel_attention_is_bit_identical_to_adaptive_pooling() -> None:
    torch.manual_seed(0)
    new = ChannelAttention(32)
    old = AdaptivePoolChannelAttention(32)
    old.load_state_dict(new.state_dict())
    x = torch.randn(3, 32, 16, 12)  # continuous values: no ties at the maximum
    x_new, x_old = x.clone().requires_grad_(), x.clone().requires_grad_()
    out_new, out_old = new(x_new), old(x_old)
    assert torch.equal(out_new, out_old)
    upstream = torch.randn_like(out_new)
    out_new.backward(upstream)
    out_old.backward(upstream)
    assert torch.equal(x_new.grad, x_old.grad)
    for a, b in zip(new.parameters(), old.parameters(), strict=True):
        assert torch.equal(a.grad, b.grad)
