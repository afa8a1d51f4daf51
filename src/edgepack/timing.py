"""The one timing function every benchmark number comes from.

MLPerf-style: the caller builds the engine once and hands over a zero-argument callable that does only the engine
call (session.run / set_tensor+invoke+get_tensor, or a Keras call); this module warms it up, then runs windows of
at least ``min_time`` seconds each, timing every call with ``perf_counter_ns``. Each statistic is the median of its
per-window values, so one disturbed window (another process on a shared core) does not move the result.
``time_calls`` times several callables with their windows interleaved, for figures that are compared.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Timing:
    """Latency of one call in microseconds, and throughput in samples per second at ``batch``."""

    p50: float
    p90: float
    p99: float
    mean: float
    std: float
    min: float
    max: float
    n: int  # timed calls over all windows
    windows: int
    window_p50: tuple[float, ...]  # spread between windows: a quiet machine gives close values
    warmup_calls: int
    batch: int
    throughput_per_s: float

    def latency_us(self) -> dict[str, Any]:
        """The results.json ``latency_us`` block."""
        return {k: v for k, v in asdict(self).items() if k in ("p50", "p90", "p99", "mean", "std", "min", "max", "n")}


def time_call(
    fn: Callable[[], Any],
    *,
    batch: int = 1,
    min_time: float = 0.5,
    windows: int = 5,
    warmup_time: float = 0.2,
    min_warmup_calls: int = 5,
    min_calls: int = 3,
) -> Timing:
    """Warm ``fn`` up, then time it in ``windows`` windows of at least ``min_time`` seconds (and ``min_calls``)."""
    return time_calls({"": fn}, batch=batch, min_time=min_time, windows=windows, warmup_time=warmup_time,
                      min_warmup_calls=min_warmup_calls, min_calls=min_calls)[""]  # fmt: skip


def time_calls(
    fns: dict[str, Callable[[], Any]],
    *,
    batch: int = 1,
    min_time: float = 0.5,
    windows: int = 5,
    warmup_time: float = 0.2,
    min_warmup_calls: int = 5,
    min_calls: int = 3,
    clock: Callable[[], int] = time.perf_counter_ns,
) -> dict[str, Timing]:
    """``time_call`` for several callables at once, their windows interleaved (window 1 of each, then window 2 of
    each, ...): a change of load on a shared machine hits all of them alike, so their ratio holds.

    ``clock`` times each call (nanoseconds); wall time by default. ``time.thread_time_ns`` counts only the CPU time
    of this thread, leaving out the time it waited for a core on a busy machine (right for a one-thread engine that
    runs in the calling thread; a benchmark says which clock it used)."""
    if min_time <= 0 or windows < 1 or batch < 1 or not fns:
        raise ValueError(f"time_call: min_time {min_time}, windows {windows}, batch {batch}, {len(fns)} callables; "
                         "expected > 0, >= 1, >= 1, >= 1")  # fmt: skip
    # Warm-up: first calls allocate, pack weights and fill caches; they are not what a running device sees.
    warmup: dict[str, int] = {}
    for name, fn in fns.items():
        warm_end = clock() + int(warmup_time * 1e9)
        calls = 0
        while calls < min_warmup_calls or clock() < warm_end:
            fn()
            calls += 1
        warmup[name] = calls

    window_ns = int(min_time * 1e9)
    per_window: dict[str, list[np.ndarray]] = {name: [] for name in fns}
    for _ in range(windows):
        for name, fn in fns.items():
            samples: list[int] = []
            append = samples.append
            start = clock()
            while True:
                t0 = clock()
                fn()
                t1 = clock()
                append(t1 - t0)
                if t1 - start >= window_ns and len(samples) >= min_calls:
                    break
            per_window[name].append(np.asarray(samples, dtype=np.float64) / 1e3)
    return {name: _timing(per_window[name], warmup[name], batch) for name in fns}


def paired_ratio(a: Callable[[], Any], b: Callable[[], Any], pairs: int, clock: Callable[[], int] = time.perf_counter_ns,
                 warmup: int = 200) -> float:  # fmt: skip
    """Median over ``pairs`` back-to-back calls of time(a) / time(b), which of the two runs first alternating.

    On a shared machine whose speed swings within seconds, two callables timed in separate windows can land in
    different speed modes; the two calls of a pair share one, so the median of the pair ratios is their cost ratio."""
    if pairs < 1:
        raise ValueError(f"paired_ratio: pairs {pairs}; expected >= 1")
    for _ in range(warmup):
        a()
        b()
    ratios = np.empty(pairs)
    for i in range(pairs):
        if i & 1:
            t0 = clock()
            a()
            t1 = clock()
            b()
            t2 = clock()  # noqa: E702
            ratios[i] = (t1 - t0) / (t2 - t1)
        else:
            t0 = clock()
            b()
            t1 = clock()
            a()
            t2 = clock()  # noqa: E702
            ratios[i] = (t2 - t1) / (t1 - t0)
    return float(np.median(ratios))


def _timing(per_window: list[np.ndarray], warmup_calls: int, batch: int) -> Timing:
    def med(stat: Callable[[np.ndarray], float]) -> float:
        return float(np.median([stat(w) for w in per_window]))

    p50s = tuple(float(np.percentile(w, 50)) for w in per_window)
    return Timing(
        p50=float(np.median(p50s)),
        p90=med(lambda w: np.percentile(w, 90)),
        p99=med(lambda w: np.percentile(w, 99)),
        mean=med(np.mean),
        std=med(np.std),
        min=float(min(w.min() for w in per_window)),
        max=float(max(w.max() for w in per_window)),
        n=int(sum(len(w) for w in per_window)),
        windows=len(per_window),
        window_p50=p50s,
        warmup_calls=warmup_calls,
        batch=batch,
        throughput_per_s=med(lambda w: batch * len(w) / (w.sum() / 1e6)),
    )
