"""The Pareto front of search trials: accuracy (higher is better) x latency x size (lower is better)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

# metric -> "max" | "min": what every trial reports and the front is taken over
OBJECTIVES: dict[str, str] = {"accuracy": "max", "latency_us_p50": "min", "gzip_bytes": "min"}


def dominates(a: Mapping[str, Any], b: Mapping[str, Any], objectives: Mapping[str, str] = OBJECTIVES) -> bool:
    """True when ``a`` is no worse than ``b`` in every objective and strictly better in at least one."""
    better = False
    for key, sense in objectives.items():
        x, y = (a[key], b[key]) if sense == "max" else (-a[key], -b[key])
        if x < y:
            return False
        better = better or x > y
    return better


def pareto_front(points: Sequence[Mapping[str, Any]], objectives: Mapping[str, str] = OBJECTIVES) -> list[int]:
    """Indices of the points no other point dominates, in input order (ties on every objective all stay)."""
    for key, sense in objectives.items():
        if sense not in ("max", "min"):
            raise ValueError(f"objective {key}: got {sense!r}; expected max or min")
    return [i for i, p in enumerate(points)
            if not any(dominates(q, p, objectives) for j, q in enumerate(points) if j != i)]  # fmt: skip
