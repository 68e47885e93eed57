"""One fixed-point layer of the integer entropy path: convolution, rescale, activation, shuffle.

A layer computes, per output channel ``o`` (integers only; :mod:`.fixed_point` says why the
result is the same on every device)::

    acc[o] = Σ_{taps, i} W[o, i, tap] · x[i at tap] + B[o]          |acc| ≤ 2**46
    y[o]   = clamp((acc · m + 2**(s-1)) >> s, ±limit)               (m, s) = (m⁻, s⁻) if acc < 0

followed by an optional pixel shuffle (CompressAI's ``subpel_conv3x3``). The convolution is one
exact integer GEMM (:class:`~jicd.codec.integer.gemm.ExactMatrix`) over the taps of a
zero-padded channels-last copy of the input (im2col): no convolution kernel (and so no
Winograd or FFT algorithm) is involved.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from jicd.codec.integer.fixed_point import check_layer_bounds, requantize, rescale_rows
from jicd.codec.integer.gemm import ExactMatrix
from jicd.errors import UserError

# What a layer stores in an export: int16 weights (O, I, k, k), int64 bias (O,) and int64
# rescale (4, O) = m⁺, s⁺, m⁻, s⁻; the rounding offsets are derived on load.
PAYLOAD_KEYS = ("weight", "bias", "rescale")
CONV_CHUNK = 4096  # output positions per GEMM of conv(): bounds im2col memory on large images


class IntegerLayer(nn.Module):
    """A stride-1, zero-padded ``k×k`` convolution (or 1×1 = a linear map over channels).

    Args:
        weight: ``(O, I, k, k)`` integer-valued tensor in the int16 range.
        bias: ``(O,)`` int64 (accumulator units).
        rescale: ``(6, O)`` int64 of :func:`.fixed_point.rescale_rows`.
        limit: output clamp (``INT16_MAX``, or ``OUTPUT_LIMIT`` for the last layer).
        shuffle: pixel-shuffle factor applied after the activation (1: none).
        taps: ``(ki, kj)`` kernel positions that are used (default: all; the masked context
            convolution uses its causal ones).
        name: for error messages.

    Buffers: ``weight`` float64 as given, ``bias``, ``rescale`` and ``taps_matrix``
    ``(T, I, O)`` float64 (one ``I×O`` matrix per used tap), all on the module's device; they
    make up the state dict (and so the model digest of ``.jicd`` files). ``gemm`` holds the
    same matrix, tap-major ``(T·I, O)``, in the forms the exact kernels read (not persistent).
    """

    # The buffers registered in __init__ (nn.Module's __getattr__ types them Tensor | Module).
    weight: Tensor
    bias: Tensor
    bias_f64: Tensor
    rescale: Tensor
    taps_matrix: Tensor

    def __init__(
        self,
        weight: Tensor,
        bias: Tensor,
        rescale: Tensor,
        limit: int,
        shuffle: int = 1,
        taps: list[tuple[int, int]] | None = None,
        name: str = "layer",
    ) -> None:
        super().__init__()
        out_channels, _, kh, kw = weight.shape
        if kh != kw or kh % 2 == 0 or bias.shape != (out_channels,):
            raise UserError(f"integer entropy model: {name} has inconsistent shapes")
        if rescale.shape != (6, out_channels) or out_channels % (shuffle * shuffle):
            raise UserError(f"integer entropy model: {name} has inconsistent shapes")
        check_layer_bounds(name, weight, bias, rescale)
        self.name, self.limit, self.shuffle, self.kernel = name, int(limit), int(shuffle), kh
        self.taps = [(ki, kj) for ki in range(kh) for kj in range(kw)] if taps is None else taps
        if any(not (0 <= ki < kh and 0 <= kj < kw) for ki, kj in self.taps):
            raise UserError(f"integer entropy model: {name} taps outside the kernel")
        self.negative = not torch.equal(rescale[:3], rescale[3:])
        self.register_buffer("weight", weight.to(torch.float64))
        self.register_buffer("bias", bias.to(torch.int64))
        # Unused since the int64 accumulation, kept because the state dict is what the model
        # digest of version-4 files hashes: dropping it would refuse files already written.
        self.register_buffer("bias_f64", self.bias.to(torch.float64))
        self.register_buffer("rescale", rescale.to(torch.int64))
        ki = torch.tensor([t[0] for t in self.taps], dtype=torch.long)
        kj = torch.tensor([t[1] for t in self.taps], dtype=torch.long)
        matrix = self.weight[:, :, ki, kj].permute(2, 1, 0).contiguous()  # (T, I, O)
        self.register_buffer("taps_matrix", matrix)
        self.gemm = ExactMatrix(self.flat, self.bias)

    @property
    def flat(self) -> Tensor:
        """``(T·I, O)``: the taps matrix for rows laid out tap-major (``[tap0 chans, tap1 …]``)."""
        return self.taps_matrix.view(-1, self.taps_matrix.shape[-1])

    def finish(self, acc: Tensor) -> Tensor:
        """int64 accumulators ``(..., O)`` (bias included) → int64 activations."""
        return requantize(acc, self.rescale, self.limit, self.negative)

    def linear(self, rows: Tensor) -> Tensor:
        """``(P, T·I)`` integer rows (int16 range) → ``(P, O)`` int64 activations."""
        return self.finish(self.gemm(rows))

    def conv(self, x: Tensor) -> Tensor:
        """Channels-last ``(H, W, I)`` int64 → ``(H·r, W·r, O / r²)`` int64 (r = shuffle)."""
        height, width, _ = x.shape
        pad = self.kernel // 2
        padded = F.pad(x.to(torch.int16), (0, 0, pad, pad, pad, pad))  # int16 range: exact
        rows_per_chunk = max(1, CONV_CHUNK // width)
        chunks = []
        for top in range(0, height, rows_per_chunk):
            bottom = min(top + rows_per_chunk, height)
            taps = [padded[top + ki : bottom + ki, kj : kj + width] for ki, kj in self.taps]
            rows = torch.cat(taps, dim=-1).view((bottom - top) * width, -1)  # im2col, tap-major
            chunks.append(self.finish(self.gemm(rows)))
        out = torch.cat(chunks).view(height, width, -1)
        return pixel_shuffle_hwc(out, self.shuffle)

    def payload(self) -> dict[str, Tensor]:
        """The exported tensors (int16 weights, int64 bias, int64 ``m⁺, s⁺, m⁻, s⁻``)."""
        return {
            "weight": self.weight.to(torch.int16).cpu(),
            "bias": self.bias.cpu(),
            "rescale": self.rescale[[0, 2, 3, 5]].cpu(),
        }

    @classmethod
    def from_payload(cls, tensors: dict, spec: dict, name: str) -> IntegerLayer:
        """Inverse of :meth:`payload` with ``spec = {"limit", "shuffle"[, "taps"]}``.

        Raises:
            UserError: missing or mistyped tensors, or values outside the exactness bounds.
        """
        if not isinstance(tensors, dict) or any(
            not isinstance(tensors.get(key), Tensor) for key in PAYLOAD_KEYS
        ):
            raise UserError(f"integer entropy model: {name} lacks {', '.join(PAYLOAD_KEYS)}")
        weight, bias, packed = (tensors[key] for key in PAYLOAD_KEYS)
        if weight.dtype != torch.int16 or bias.dtype != torch.int64 or weight.dim() != 4:
            raise UserError(f"integer entropy model: {name} tensors have the wrong dtype")
        if packed.dtype != torch.int64 or packed.shape != (4, weight.shape[0]):
            raise UserError(f"integer entropy model: {name} rescale has the wrong shape")
        rescale = rescale_rows(*packed.unbind(0))
        taps = spec.get("taps")
        taps = None if taps is None else [(int(a), int(b)) for a, b in taps]
        return cls(weight, bias, rescale, int(spec["limit"]), int(spec["shuffle"]), taps, name)

    def spec(self) -> dict:
        """The non-tensor description stored beside :meth:`payload`."""
        spec: dict = {"limit": self.limit, "shuffle": self.shuffle}
        if len(self.taps) != self.kernel * self.kernel:
            spec["taps"] = [list(t) for t in self.taps]
        return spec


def pixel_shuffle_hwc(x: Tensor, factor: int) -> Tensor:
    """``nn.PixelShuffle`` on a channels-last map: ``(H, W, C·r²)`` → ``(H·r, W·r, C)``.

    Channel ``c·r² + i·r + j`` of input pixel ``(h, w)`` goes to output pixel
    ``(h·r + i, w·r + j)``, channel ``c`` (PyTorch's layout).
    """
    if factor == 1:
        return x
    height, width, channels = x.shape
    out = channels // (factor * factor)
    x = x.view(height, width, out, factor, factor).permute(0, 3, 1, 4, 2)
    return x.reshape(height * factor, width * factor, out)
