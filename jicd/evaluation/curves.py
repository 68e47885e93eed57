"""RD curves and BD-rates between them: the one implementation behind ``jicd report`` and
``jicd reproduce``.

A :class:`Curve` is one codec's RD points; :func:`bd_rate` compares two with the ``bjontegaard``
package (pchip; the cubic fit where PSNR does not increase with rate; only the RD-efficient
points of a curve whose PSNR peaks and falls). On MS-SSIM the same is done in dB
(:func:`as_ms_ssim_db`).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, replace

import bjontegaard
import numpy as np

from jicd.metrics import ms_ssim_db


@dataclass
class Curve:
    """One RD curve: points sorted by rate.

    Attributes:
        label: Legend / table name.
        bpp: Rates in bits per pixel.
        psnr: PSNR in dB, one per rate.
        ms_ssim: MS-SSIM per rate, or None when the source has none.
        quality: Quality index per point, or None.
        measured: True for our own results, False for published reference points.
        metric: Which PSNR ``psnr`` holds: ``psnr`` (authors' truncation) or ``psnr-rgb``.
        psnr_by_metric: Our curves: every PSNR convention the results carry.
    """

    label: str
    bpp: list[float]
    psnr: list[float]
    ms_ssim: list[float] | None = None
    quality: list | None = None
    measured: bool = True
    metric: str = "psnr-rgb"
    psnr_by_metric: dict[str, list[float]] | None = None


@dataclass
class BdRate:
    """A BD-rate of ``test`` against ``anchor`` (negative = fewer bits for the same PSNR)."""

    test: str
    anchor: str
    percent: float
    method: str
    note: str
    metric: str = ""


def sorted_curve(curve: Curve) -> Curve:
    order = np.argsort(curve.bpp, kind="stable")

    def pick(values):
        return None if values is None else [values[i] for i in order]

    by_metric = curve.psnr_by_metric
    return replace(
        curve,
        bpp=pick(curve.bpp),
        psnr=pick(curve.psnr),
        ms_ssim=pick(curve.ms_ssim),
        quality=pick(curve.quality),
        psnr_by_metric=None if by_metric is None else {m: pick(v) for m, v in by_metric.items()},
    )


def in_metric(curve: Curve, metric: str) -> Curve:
    """``curve`` with its PSNR in convention ``metric`` (unchanged when it lacks that one)."""
    values = (curve.psnr_by_metric or {}).get(metric)
    return curve if values is None else replace(curve, psnr=values, metric=metric)


def _increasing(values: list[float]) -> bool:
    return all(b > a for a, b in zip(values, values[1:], strict=False))


CUBIC_POINTS = 4
"""Points per curve the cubic fallback needs (a cubic has four coefficients)."""


def bd_rate(anchor: Curve, test: Curve, method: str = "pchip") -> BdRate:
    """PSNR BD-rate in percent of ``test`` vs ``anchor`` with the ``bjontegaard`` package.

    pchip needs PSNR strictly increasing with rate on both curves; where that fails the classic
    cubic polynomial fit is used and the note says so — with 4 points or more per curve; with
    fewer, the dominated points are dropped and pchip runs on the rest. Fewer than 2 points → NaN.
    """
    anchor, test = sorted_curve(anchor), sorted_curve(test)
    if min(len(anchor.bpp), len(test.bpp)) < 2:
        return BdRate(test.label, anchor.label, math.nan, "-", "needs >= 2 points per curve")
    flat = [c.label for c in (anchor, test) if not _increasing(c.psnr)]
    notes = [f"quality not increasing with rate ({', '.join(flat)}): cubic fit"] if flat else []
    chosen = "cubic" if flat else method
    if flat and min(len(anchor.bpp), len(test.bpp)) < CUBIC_POINTS:
        # A cubic through fewer than 4 points is not determined and its integral can be any
        # number (a 3-quality study gave 10^17 %): integrate over the RD-efficient points.
        anchor, test = _efficient(anchor), _efficient(test)
        chosen = method
        notes = [f"quality not increasing with rate ({', '.join(flat)}), too few points for a "
                 f"cubic fit: dominated points dropped, {method}"]  # fmt: skip
        if min(len(anchor.bpp), len(test.bpp)) < 2:
            return BdRate(test.label, anchor.label, math.nan, "-", notes[0] + "; < 2 left")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            percent = _bjontegaard(anchor, test, chosen)
        except AssertionError:
            # A curve whose PSNR peaks and then falls (a classical codec spending ever more bits
            # on the noise) has no rate as a function of PSNR: integrate over its RD-efficient
            # points (every point that another one beats on both rate and PSNR is dropped).
            caught.clear()
            anchor, test = _efficient(anchor), _efficient(test)
            chosen = method
            notes = ["PSNR peaks then falls: dominated points dropped, " + method]
            percent = _bjontegaard(anchor, test, chosen)
    notes += [str(w.message).split(". You can")[0] for w in caught if "overlap" in str(w.message)]
    return BdRate(test.label, anchor.label, float(percent), chosen, "; ".join(notes))


def _bjontegaard(anchor: Curve, test: Curve, method: str) -> float:
    if min(len(anchor.bpp), len(test.bpp)) < 2:
        return math.nan
    return bjontegaard.bd_rate(
        anchor.bpp, anchor.psnr, test.bpp, test.psnr, method=method, require_matching_points=False
    )


def _efficient(curve: Curve) -> Curve:
    """The points of ``curve`` (sorted by rate) whose PSNR beats every lower-rate point."""
    keep, best = [], -math.inf
    for i, value in enumerate(curve.psnr):
        if value > best:
            keep.append(i)
            best = value
    return Curve(curve.label, [curve.bpp[i] for i in keep], [curve.psnr[i] for i in keep])


def has_ms_ssim(curve: Curve) -> bool:
    values = curve.ms_ssim or []
    return len(values) == len(curve.bpp) and all(v is not None and 0 < v < 1 for v in values)


def as_ms_ssim_db(curve: Curve) -> Curve:
    """``curve`` with MS-SSIM in dB (``−10·log10(1 − MS-SSIM)``) in place of PSNR, so BD-rates
    on MS-SSIM use the same interpolation as on PSNR (the usual MS-SSIM BD-rate)."""
    assert curve.ms_ssim is not None  # callers check has_ms_ssim first
    return replace(curve, psnr=[ms_ssim_db(v) for v in curve.ms_ssim], metric="ms-ssim-db")
