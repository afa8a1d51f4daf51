"""Kept so ``edgepack.bench.timing`` imports keep working: the timing function lives in ``edgepack.timing``
(used by bench and by export's latency plans alike, so it belongs to neither)."""

from edgepack.timing import Timing, time_call

__all__ = ["Timing", "time_call"]
