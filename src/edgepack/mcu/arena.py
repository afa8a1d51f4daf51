"""The tensor arena a file needs in TFLM, measured: the smallest size with which it allocates and runs.

Binary search over the arena size; each probe builds a TFLM interpreter (AllocateTensors) and runs one inference.
The result is checked against ``print_allocations`` (head = non-persistent tensor data planned by the memory
planner, tail = persistent allocations: eval tensors, node structs, kernel buffers). Measured on this x86-64
build: 64-bit pointers make the tail a little larger than on a 32-bit MCU; optimized kernels (CMSIS-NN, esp-nn)
may ask for scratch buffers the reference kernels do not, which ``MARGIN`` is for.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from edgepack.mcu.tflm import allocations, interpreter

# arena.h = measured * (1 + MARGIN_FRACTION) + MARGIN_BYTES, rounded up to 16: room for optimized kernels' scratch
# buffers (CMSIS-NN asks for an im2col-sized buffer per conv; the reference kernels measured here ask for none) and
# the arena start's 16-byte alignment.
MARGIN_FRACTION = 0.10
MARGIN_BYTES = 1024


def runs(content: bytes, arena_size: int) -> bool:
    """Whether ``content`` allocates with ``arena_size`` bytes and runs one (all-zero-input) inference."""
    try:
        it = interpreter(content, arena_size)
        d = it.get_input_details(0)
        it.set_input(np.zeros([int(s) for s in d["shape"]], dtype=d["dtype"]), 0)
        it.invoke()
    except (RuntimeError, ValueError):
        return False
    return True


def measure(content: bytes) -> dict[str, Any]:
    """The smallest working arena in bytes (searched), with print_allocations' head/tail at that size."""
    hi = max(4096, 4 * len(content))
    while not runs(content, hi):
        hi *= 2
        if hi > 1 << 30:
            raise RuntimeError("TFLM did not run with a 1 GiB arena")
    lo = 0  # invariant: lo fails (0 always does), hi runs
    probes = 0
    while hi - lo > 1:
        mid = (lo + hi) // 2
        probes += 1
        if runs(content, mid):
            hi = mid
        else:
            lo = mid
    it = interpreter(content, hi)
    d = it.get_input_details(0)
    it.set_input(np.zeros([int(s) for s in d["shape"]], dtype=d["dtype"]), 0)
    it.invoke()
    alloc = allocations(it)
    return {"arena_bytes": hi, "head_bytes": alloc.get("head_bytes"), "tail_bytes": alloc.get("tail_bytes"),
            "print_allocations_total_bytes": alloc["total_bytes"], "records": alloc["records"],
            "search": f"binary search over the arena size, {probes} probes, each AllocateTensors + one Invoke",
            "recommended_bytes": recommended(hi),
            "margin": f"+{MARGIN_FRACTION:.0%} + {MARGIN_BYTES} bytes, rounded up to 16"}  # fmt: skip


def recommended(arena_bytes: int) -> int:
    """The arena.h size: the measured one plus the stated margin."""
    n = int(arena_bytes * (1 + MARGIN_FRACTION)) + MARGIN_BYTES
    return (n + 15) // 16 * 16
