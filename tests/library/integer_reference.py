"""A plain NumPy int64 reference of the integer entropy network (for the fuzz tests).

Written from the fixed-point spec (:mod:`jicd.codec.integer.fixed_point`, ``layers``,
``network``), deliberately unlike the implementation: channels-first maps, direct convolution
by shifted integer products (``np.tensordot`` on int64 never touches a float BLAS), the whole
latent at once instead of wavefront by wavefront, ``np.searchsorted`` for the indices.
"""

from __future__ import annotations

import numpy as np

INT16_MAX = 32767


def requantize(acc: np.ndarray, rescale: np.ndarray, limit: int) -> np.ndarray:
    """``acc (O, ...)``; ``rescale (6, O)`` = m⁺, half⁺, s⁺, m⁻, half⁻, s⁻."""
    shape = (-1,) + (1,) * (acc.ndim - 1)
    m, h, s, mn, hn, sn = (row.reshape(shape) for row in rescale)
    pos = np.right_shift(acc * m + h, s)
    neg = np.right_shift(acc * mn + hn, sn)
    return np.clip(np.where(acc >= 0, pos, neg), -limit, limit)


def conv_same(x: np.ndarray, weight: np.ndarray, bias: np.ndarray) -> np.ndarray:
    """Zero-padded stride-1 convolution: ``x (I, H, W)``, ``weight (O, I, k, k)`` → ``(O, H, W)``.

    ``np.tensordot`` of int64 arrays sums exactly in int64 (NumPy uses no BLAS for integers).
    """
    _, height, width = x.shape
    k = weight.shape[-1]
    pad = k // 2
    padded = np.pad(x, ((0, 0), (pad, pad), (pad, pad)))
    acc = np.zeros((weight.shape[0], height, width), dtype=np.int64)
    for ki in range(k):
        for kj in range(k):
            window = padded[:, ki : ki + height, kj : kj + width]
            acc += np.tensordot(weight[:, :, ki, kj], window, axes=(1, 0))
    return acc + bias[:, None, None]


def pixel_shuffle(x: np.ndarray, r: int) -> np.ndarray:
    """``(C·r², H, W)`` → ``(C, H·r, W·r)`` (channel ``c·r² + i·r + j`` → offset ``(i, j)``)."""
    if r == 1:
        return x
    channels, height, width = x.shape
    out = x.reshape(channels // (r * r), r, r, height, width).transpose(0, 3, 1, 4, 2)
    return out.reshape(channels // (r * r), height * r, width * r)


def layer(x: np.ndarray, params: dict) -> np.ndarray:
    """One layer of the spec: conv, bias, requantize + activation, clamp, pixel shuffle."""
    acc = conv_same(x, params["weight"], params["bias"])
    return pixel_shuffle(requantize(acc, params["rescale"], params["limit"]), params["shuffle"])


def hyper(z_int: np.ndarray, layers: list[dict]) -> np.ndarray:
    """``h_s``: ``(N, h, w)`` → ``(2M, 4h, 4w)``."""
    for params in layers:
        z_int = layer(z_int, params)
    return z_int


def entropy_parameters(
    y_int: np.ndarray, params: np.ndarray, context: dict, head: list[dict], thresholds: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """CDF indices and means of every position, from the whole coded latent.

    Args:
        y_int: ``(M, H, W)`` coded latent (``symbol·2**y_bits + mean``).
        params: ``(2M, H, W)`` hyper output.
        context: the masked context layer (weight zero outside its causal taps).
        head: the 1×1 head layers.
        thresholds: sorted scale thresholds.

    Returns:
        ``(index (M, H, W), mean (M, H, W))``.
    """
    ctx = layer(np.clip(y_int, -INT16_MAX, INT16_MAX), context)
    hidden = np.concatenate([params, ctx])
    for params_ in head:
        hidden = layer(hidden, params_)
    channels = y_int.shape[0]
    scales, means = hidden[:channels], hidden[channels:]
    return np.searchsorted(thresholds, scales, side="left"), means


def layer_params(module) -> dict:
    """An :class:`~jicd.codec.integer.layers.IntegerLayer` as plain NumPy int64 arrays.

    The context layer's weight is expanded back to its full ``k×k`` kernel (zeros outside
    the taps), so the reference convolves like an ordinary masked convolution.
    """
    weight = module.weight.to("cpu").numpy().astype(np.int64)
    full = np.zeros_like(weight)
    for ki, kj in module.taps:
        full[:, :, ki, kj] = weight[:, :, ki, kj]
    return {
        "weight": full,
        "bias": module.bias.cpu().numpy(),
        "rescale": module.rescale.cpu().numpy(),
        "limit": module.limit,
        "shuffle": module.shuffle,
    }
