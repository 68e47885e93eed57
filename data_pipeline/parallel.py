"""One way to run a per-item function in worker processes with a progress bar."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from typing import Any

from tqdm import tqdm


def worker_count(workers: int) -> int:
    """``workers``, or one per CPU core for 0."""
    return workers or os.cpu_count() or 1


def parallel_map(
    func: Callable[..., Any], items: list, workers: int, desc: str, unit: str, *args: Any
) -> Iterator[Any]:
    """``func(item, *args)`` for each item, in order, in ``workers`` processes (0 = all cores),
    with a tqdm bar."""
    count = worker_count(workers)
    with tqdm(total=len(items), desc=desc, unit=unit) as bar:
        if count == 1 or len(items) <= 1:
            for item in items:
                yield func(item, *args)
                bar.update()
            return
        with ProcessPoolExecutor(count) as pool:
            chunk = max(1, len(items) // (8 * count))
            for result in pool.map(func, items, *[[a] * len(items) for a in args], chunksize=chunk):
                yield result
                bar.update()
