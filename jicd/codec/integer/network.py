"""The integer entropy model: everything that feeds the rANS coder, in fixed point.

It replaces, for coding, a Cheng2020Anchor's ``h_s``, masked ``context_prediction``,
``entropy_parameters``, the scale → CDF-index step of ``gaussian_conditional`` and the
entropy bottleneck's medians, and carries the CDF tables of both entropy models as integers
(so no machine recomputes them in float). Fixed-point formats (see :mod:`.fixed_point`)::

    z_hat  = z_int / 2**z_bits        (N channels; z_int = symbol·2**z_bits + z_median)
    params = h_s(z_int)               (2M channels, int16 range)
    y_hat  = y_int / 2**y_bits        (M channels; y_int = symbol·2**y_bits + mean)
    ctx    = context(clamp(y_int))    (2M channels, int16 range)
    scales, means = head(params, ctx) (scales at 2**scale_bits, means at 2**y_bits)
    index  = #{k : scale_thresholds[k] < scale}

The threshold rule is CompressAI's ``build_indexes`` (the index counts the table scales, all
but the last, strictly below the scale) on the exactly representable scale ``s / 2**bits``:
``table[k] < s / 2**bits ⟺ floor(table[k]·2**bits) < s``. Shapes below use ``P`` positions.
"""

from __future__ import annotations

from typing import Any, cast

import torch
from torch import Tensor, nn

from jicd.codec.integer.fixed_point import INT16_MAX
from jicd.codec.integer.gemm import ExactMatrix
from jicd.codec.integer.layers import IntegerLayer
from jicd.errors import UserError

PAYLOAD_FORMAT = "jicd-integer-entropy"
PAYLOAD_VERSION = 1
TABLES = ("y_cdf", "y_cdf_length", "y_offset", "z_cdf", "z_cdf_length", "z_offset")
SCALARS = ("y_bits", "z_bits", "scale_bits")


class IntegerEntropyModel(nn.Module):
    """Fixed-point ``h_s`` + context + entropy-parameter head, CDF tables and index thresholds.

    Args:
        hyper: the ``h_s`` layers, in order (k×k convolutions, some with a pixel shuffle).
        context: the masked context convolution, restricted to its causal taps.
        head: the 1×1 entropy-parameter layers; the first reads ``cat(params, ctx)``.
        tensors: ``scale_thresholds`` (int64, sorted), ``z_median`` (N,) int64 and the
            :data:`TABLES` (int32) of the Gaussian conditional (``y_``) and the bottleneck
            (``z_``), as CompressAI's ``_quantized_cdf``, ``_cdf_length``, ``_offset``.
        scalars: ``y_bits``, ``z_bits``, ``scale_bits`` (fractional bits of y, z, scales).
        calibration: free-form record of how the scales were chosen (kept in exports).
    """

    # The buffers registered in __init__ (nn.Module's __getattr__ types them Tensor | Module).
    scale_thresholds: Tensor
    z_median: Tensor
    y_cdf: Tensor
    y_cdf_length: Tensor
    y_offset: Tensor
    z_cdf: Tensor
    z_cdf_length: Tensor
    z_offset: Tensor

    def __init__(
        self,
        hyper: list[IntegerLayer],
        context: IntegerLayer,
        head: list[IntegerLayer],
        tensors: dict[str, Tensor],
        scalars: dict[str, int],
        calibration: dict | None = None,
    ) -> None:
        super().__init__()
        self.hyper, self.head, self.context = nn.ModuleList(hyper), nn.ModuleList(head), context
        self.y_bits, self.z_bits, self.scale_bits = (int(scalars[k]) for k in SCALARS)
        self.calibration = calibration or {}
        for name in ("scale_thresholds", "z_median", *TABLES):
            self.register_buffer(name, tensors[name])
        self._check_shapes()
        # The head's first layer reads cat(params, ctx): its two row blocks as separate
        # matrices, the params half applied once per image, the ctx half per wavefront.
        first = _layers(self.head)[0]
        split = first.flat.shape[0] - self.context.weight.shape[0]
        self.head_params = ExactMatrix(first.flat[:split], first.bias)
        self.head_context = ExactMatrix(first.flat[split:])

    @property
    def latent_channels(self) -> int:
        """``M``: channels of ``y``."""
        return self.context.weight.shape[1]

    @property
    def hyper_channels(self) -> int:
        """``N``: channels of ``z``."""
        return _layers(self.hyper)[0].weight.shape[1]

    def _check_shapes(self) -> None:
        channels, ctx_out = self.latent_channels, self.context.weight.shape[0]
        hyper, head = _layers(self.hyper), _layers(self.head)
        first, last = head[0].weight, head[-1].weight
        params = hyper[-1].weight.shape[0] // hyper[-1].shuffle ** 2
        links = [
            (a.weight.shape[0] // a.shuffle**2, b.weight.shape[1]) for a, b in _pairs(self.hyper)
        ]
        links += [(a.weight.shape[0], b.weight.shape[1]) for a, b in _pairs(self.head)]
        if (
            any(out != nxt for out, nxt in links)
            or first.shape[1] != params + ctx_out
            or last.shape[0] != 2 * channels
            or self.z_median.shape != (self.hyper_channels,)
            or self.z_cdf.shape[0] != self.hyper_channels
            or self.y_cdf.shape[0] != self.scale_thresholds.numel() + 1
            or bool((self.scale_thresholds[1:] < self.scale_thresholds[:-1]).any())
        ):
            raise UserError("integer entropy model: layer shapes or tables do not fit together")

    def hyper_params(self, z_int: Tensor) -> Tensor:
        """``h_s``: channels-last ``(h, w, N)`` int64 → ``(4h, 4w, 2M)`` int64 params."""
        x = z_int
        for layer in _layers(self.hyper):
            x = layer.conv(x)
        return x

    def hyper_part(self, params: Tensor) -> Tensor:
        """The head's first layer on the ``params`` half of its input, bias included.

        ``(P, 2M)`` int64 → ``(P, C1)`` int64 accumulators (once per image).
        """
        return self.head_params(params)

    def predict(self, patches: Tensor, hyper_part: Tensor) -> tuple[Tensor, Tensor]:
        """Entropy parameters of ``P`` positions from their causal context.

        Args:
            patches: ``(P, T·M)`` integer tensor (int16 range): clamped ``y_int`` of the ``T``
                causal taps, tap-major.
            hyper_part: ``(P, C1)`` int64 rows of :meth:`hyper_part`.

        Returns:
            ``(index (P, M) int32, mean (P, M) int64 at 2**y_bits)``.
        """
        ctx = self.context.linear(patches)
        head = _layers(self.head)
        hidden = head[0].finish(self.head_context(ctx, hyper_part))
        for layer in head[1:]:
            hidden = layer.linear(hidden)
        scales, means = hidden.split(self.latent_channels, dim=1)
        index = torch.searchsorted(self.scale_thresholds, scales.contiguous())
        return index.to(torch.int32), means

    def payload(self) -> dict[str, Any]:
        """What an export stores (plain dicts, lists, ints and CPU tensors: ``weights_only``)."""
        groups = {
            "hyper": _layers(self.hyper),
            "context": [self.context],
            "head": _layers(self.head),
        }
        return {
            "format": PAYLOAD_FORMAT,
            "version": PAYLOAD_VERSION,
            "layers": {
                g: [(layer.spec(), layer.payload()) for layer in ls] for g, ls in groups.items()
            },
            "tensors": {
                n: getattr(self, n).cpu() for n in ("scale_thresholds", "z_median", *TABLES)
            },
            "scalars": {k: getattr(self, k) for k in SCALARS},
            "calibration": self.calibration,
        }

    @classmethod
    def from_payload(cls, payload: Any, where: str = "export") -> IntegerEntropyModel:
        """Rebuild from :meth:`payload`, checking types, shapes and exactness bounds.

        Raises:
            UserError: one line, for anything malformed (e.g. a hand-edited export).
        """
        if not isinstance(payload, dict) or payload.get("format") != PAYLOAD_FORMAT:
            raise UserError(f"{where}: 'integer_entropy' is not a {PAYLOAD_FORMAT} payload")
        if payload.get("version") != PAYLOAD_VERSION:
            raise UserError(
                f"{where}: integer entropy model version {payload.get('version')!r} "
                f"(this build reads {PAYLOAD_VERSION})"
            )
        try:
            layers = {
                group: [
                    IntegerLayer.from_payload(tensors, spec, f"{group}.{i}")
                    for i, (spec, tensors) in enumerate(payload["layers"][group])
                ]
                for group in ("hyper", "context", "head")
            }
            tensors = {k: payload["tensors"][k] for k in ("scale_thresholds", "z_median", *TABLES)}
            scalars = {k: int(payload["scalars"][k]) for k in SCALARS}
        except (KeyError, TypeError, ValueError) as err:
            if isinstance(err, UserError):
                raise UserError(f"{where}: {err}") from None
            raise UserError(f"{where}: malformed integer entropy model ({err!r})") from None
        _check_tensors(tensors, scalars, where)
        if len(layers["context"]) != 1 or not layers["hyper"] or not layers["head"]:
            raise UserError(f"{where}: integer entropy model needs hyper, context and head layers")
        return cls(
            layers["hyper"], layers["context"][0], layers["head"], tensors, scalars,
            payload.get("calibration") or {},
        )  # fmt: skip


def _layers(modules: nn.ModuleList) -> list[IntegerLayer]:
    """The items of ``hyper`` or ``head``, all IntegerLayers (a ModuleList types them Module)."""
    return [cast(IntegerLayer, module) for module in modules]


def _pairs(layers: nn.ModuleList) -> list[tuple[IntegerLayer, IntegerLayer]]:
    return list(zip(_layers(layers)[:-1], _layers(layers)[1:], strict=True))


def _check_tensors(tensors: dict, scalars: dict, where: str) -> None:
    """dtypes and ranges of the non-layer tensors of a payload."""
    int64 = ("scale_thresholds", "z_median")
    if any(not isinstance(t, Tensor) for t in tensors.values()):
        raise UserError(f"{where}: integer entropy model tensors missing")
    if any(tensors[k].dtype != torch.int64 or tensors[k].dim() != 1 for k in int64):
        raise UserError(f"{where}: integer entropy model thresholds/medians are not int64 vectors")
    if any(tensors[k].dtype != torch.int32 for k in TABLES):
        raise UserError(f"{where}: integer entropy model CDF tables are not int32")
    if any(not 0 <= v <= 24 for v in scalars.values()):
        raise UserError(f"{where}: integer entropy model fractional bits outside [0, 24]")
    if bool((tensors["z_median"].abs() > INT16_MAX).any()):
        raise UserError(f"{where}: integer entropy model medians outside the int16 range")
    for prefix in ("y_", "z_"):
        cdf, length, offset = (tensors[prefix + k] for k in ("cdf", "cdf_length", "offset"))
        rows = cdf.shape[0] if cdf.dim() == 2 else -1
        if length.shape != (rows,) or offset.shape != (rows,):
            raise UserError(f"{where}: integer entropy model {prefix}CDF tables do not fit")
        if bool((length < 2).any() | (length > cdf.shape[1]).any()):
            raise UserError(f"{where}: integer entropy model {prefix}CDF lengths out of range")
