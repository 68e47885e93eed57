"""CompressAI's entropy bottleneck with a training forward that needs no host synchronisation."""

from __future__ import annotations

from compressai.entropy_models import EntropyBottleneck
from torch import Tensor


class SyncFreeEntropyBottleneck(EntropyBottleneck):
    """:class:`compressai.entropy_models.EntropyBottleneck` whose ``forward`` never reads a
    device tensor on the host.

    CompressAI's forward builds the ``(B, C, …) → (C, B, …)`` permutation as a tensor on the
    input's device and unpacks it (``x.permute(*perm)``): on CUDA a device-to-host copy on every
    call — one host synchronisation per training step — and a graph break under
    ``torch.compile``. This forward is the same computation with the permutation as Python ints,
    made of the library's own ``quantize``, ``_likelihood`` and ``likelihood_lower_bound``; the
    parameters, buffers, ``compress``/``decompress`` and ``aux_loss`` are the library's.
    ``tests/library/test_models.py`` checks its outputs against the library's, bit for bit.

    Shapes: ``(B, C, H, W)`` → outputs and likelihoods ``(B, C, H, W)``.
    """

    def forward(self, x: Tensor, training: bool | None = None) -> tuple[Tensor, Tensor]:
        if training is None:
            training = self.training
        perm = (1, 0, *range(2, x.ndim))  # swaps B and C: its own inverse
        values = x.permute(perm).contiguous()
        shape = values.shape
        mode = "noise" if training else "dequantize"
        outputs = self.quantize(values.reshape(shape[0], 1, -1), mode, self._get_medians())
        likelihood, _, _ = self._likelihood(outputs)
        if self.use_likelihood_bound:
            likelihood = self.likelihood_lower_bound(likelihood)
        outputs = outputs.reshape(shape).permute(perm).contiguous()
        return outputs, likelihood.reshape(shape).permute(perm).contiguous()
