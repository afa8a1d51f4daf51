"""Kept so ``edgepack.bench.timing`` imports keep working: the timing functions live in ``edgepack.timing``
(used by bench and by export's latency plans alike, so they belong to neither)."""

from edgepack.timing import Timing, time_call, time_calls

__all__ = ["Timing", "time_call", "time_calls"]
