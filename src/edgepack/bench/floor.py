"""The compute floor: the best multiply-add rate one core of this machine reaches, fp32 and int8.

fp32: the better of OpenBLAS SGEMM through numpy and ONNX Runtime's MatMul; int8: ONNX Runtime's integer GEMM
(MatMulInteger, uint8 x int8 with the weights as a constant, as a quantized model has them). Both are measured in a
child process pinned to one thread (BLAS thread variables set before numpy loads, ORT intra/inter-op threads 1),
with the same timing function as every benchmark row. ``floor_us = MACs / rate``: no file of that many
multiply-adds can run faster on one core of this machine than large, cache-friendly matrix products do.

The tiny ONNX graphs are written as protobuf bytes by hand, so the floor needs only numpy and onnxruntime (the
``onnx`` package belongs to the training extra).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

SIZES = (256, 512, 1024)  # square GEMMs; the best rate over these sizes is the floor
TARGET_SPREAD = 0.03  # windows are added until the best ``windows`` of them agree within 3% ...
MAX_WINDOWS = 12  # ... or this many were timed: then the best window stands and the spread is recorded
BUSY_LOAD = 0.5  # load average per core above which a bench run is flagged as measured on a busy machine
BUSY_OTHER = 0.25  # cores per core that other processes keep busy, above which a bench run is flagged as busy
LARGE_SPREAD = 0.10  # floor spread above which the floor is flagged as unstable
_THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "BLIS_NUM_THREADS")

# -- a minimal protobuf writer for ModelProto --------------------------------------------------------------------


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def _int(field: int, v: int) -> bytes:
    return _varint(field << 3) + _varint(v)


def _bytes(field: int, payload: bytes) -> bytes:
    return _varint(field << 3 | 2) + _varint(len(payload)) + payload


def _str(field: int, s: str) -> bytes:
    return _bytes(field, s.encode())


_ELEM = {"float32": 1, "uint8": 2, "int8": 3, "int32": 6}


def _value_info(name: str, dtype: str, shape: tuple[int, ...]) -> bytes:
    dims = b"".join(_bytes(1, _int(1, d)) for d in shape)  # TensorShapeProto.dim{dim_value}
    tensor_type = _int(1, _ELEM[dtype]) + _bytes(2, dims)  # TypeProto.Tensor{elem_type, shape}
    return _str(1, name) + _bytes(2, _bytes(1, tensor_type))  # ValueInfoProto{name, type{tensor_type}}


def _initializer(name: str, array: Any) -> bytes:
    dims = b"".join(_int(1, d) for d in array.shape)
    return dims + _int(2, _ELEM[str(array.dtype)]) + _str(8, name) + _bytes(9, array.tobytes())


def matmul_model(op: str, a_dtype: str, b: Any, m: int, out_dtype: str) -> bytes:
    """ONNX bytes of ``Y = op(A, B)`` with A an (m, K) input and B a constant (K, N) initializer."""
    k, n = b.shape
    node = _str(1, "A") + _str(1, "B") + _str(2, "Y") + _str(3, "gemm") + _str(4, op)
    graph = (
        _bytes(1, node) + _str(2, "floor") + _bytes(5, _initializer("B", b))
        + _bytes(11, _value_info("A", a_dtype, (m, k))) + _bytes(12, _value_info("Y", out_dtype, (m, n)))
    )  # fmt: skip
    opset = _str(1, "") + _int(2, 17)
    return _int(1, 8) + _str(2, "edgepack-floor") + _bytes(7, graph) + _bytes(8, opset)


# -- measuring (in the child process) ------------------------------------------------------------------------------


def _measure(min_time: float, windows: int, sizes: tuple[int, ...]) -> dict[str, Any]:
    import importlib.util

    import numpy as np

    from edgepack.timing import time_call

    # A LiteRT-only device install has no onnxruntime: numpy's sgemm gives the fp32 rate, and int8 has no floor.
    ort = __import__("onnxruntime") if importlib.util.find_spec("onnxruntime") is not None else None

    rng = np.random.default_rng(0)
    found: dict[str, list[dict[str, Any]]] = {"fp32": [], "int8": []}

    def rate(kind: str, method: str, size: int, fn: Any) -> None:
        p50s = list(time_call(fn, min_time=min_time, windows=windows, warmup_time=0.1).window_p50)
        while window_spread(p50s, windows) > TARGET_SPREAD and len(p50s) < MAX_WINDOWS:
            p50s += time_call(fn, min_time=min_time, windows=1, warmup_time=0.0).window_p50
        best_us = min(p50s)  # the best window: the floor is what the core can reach
        found[kind].append({"method": method, "size": size, "macs_per_s": size**3 / (best_us / 1e6),
                            "windows": len(p50s), "spread": round(window_spread(p50s, windows), 4)})  # fmt: skip

    opts = ort.SessionOptions() if ort else None
    if ort:
        opts.intra_op_num_threads = 1
        opts.inter_op_num_threads = 1
    for s in sizes:
        a = rng.standard_normal((s, s), dtype=np.float32)
        b = rng.standard_normal((s, s), dtype=np.float32)
        c = np.empty((s, s), dtype=np.float32)
        rate("fp32", "numpy sgemm", s, lambda a=a, b=b, c=c: np.matmul(a, b, out=c))
        if ort is None:
            continue
        sess = ort.InferenceSession(matmul_model("MatMul", "float32", b, s, "float32"), opts, providers=["CPUExecutionProvider"])  # fmt: skip
        rate("fp32", "onnxruntime MatMul", s, lambda sess=sess, a=a: sess.run(None, {"A": a}))
        qa = rng.integers(0, 256, (s, s), dtype=np.uint8)
        qb = rng.integers(-128, 128, (s, s), dtype=np.int8)
        sess8 = ort.InferenceSession(matmul_model("MatMulInteger", "uint8", qb, s, "int32"), opts, providers=["CPUExecutionProvider"])  # fmt: skip
        rate("int8", "onnxruntime MatMulInteger u8s8", s, lambda sess=sess8, a=qa: sess.run(None, {"A": a}))
    out: dict[str, Any] = {}
    for kind, rows in found.items():
        if not rows:  # no engine here to measure it with: rows of this kind get no floor
            out[f"{kind}_macs_per_s"], out[f"{kind}_method"], out[f"{kind}_candidates"] = None, "not measured", []
            continue
        best = max(rows, key=lambda r: r["macs_per_s"])
        out[f"{kind}_macs_per_s"] = best["macs_per_s"]
        out[f"{kind}_method"] = f"{best['method']} {best['size']}x{best['size']}"
        out[f"{kind}_candidates"] = rows
        out[f"{kind}_spread"] = best["spread"]
    out["blas"] = _blas_info()
    out["env"] = {k: os.environ.get(k) for k in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE", *_THREAD_VARS)}
    return out


def window_spread(p50s: list[float], k: int) -> float:
    """(max - min) / min over the ``k`` fastest windows: how well the best windows agree."""
    best = sorted(p50s)[: max(k, 1)]
    return (best[-1] - best[0]) / best[0] if best and best[0] > 0 else 0.0


def _blas_info() -> list[dict[str, Any]]:
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return []
    keep = ("internal_api", "version", "architecture", "num_threads")
    return [{k: i.get(k) for k in keep} for i in threadpool_info() if i.get("user_api") == "blas"]


def measure_floor(min_time: float = 0.3, windows: int = 3, sizes: tuple[int, ...] = SIZES) -> dict[str, Any]:
    """Measure the one-core fp32 and int8 rates in a fresh single-threaded child process."""
    env = dict(os.environ)
    env.update({k: "1" for k in _THREAD_VARS})
    env["PYTHONPATH"] = os.pathsep.join([str(Path(__file__).resolve().parents[2]), env.get("PYTHONPATH", "")])
    code = f"import json, edgepack.bench.floor as f; print(json.dumps(f._measure({min_time!r}, {windows!r}, {tuple(sizes)!r})))"
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=600)
    if proc.returncode != 0:
        raise RuntimeError(f"compute floor measurement failed: {proc.stderr.strip().splitlines()[-1:]}")
    floor = json.loads(proc.stdout.strip().splitlines()[-1])
    floor.update({"threads": 1, "min_time_s": min_time, "windows": windows, "sizes": list(sizes),
                  "target_spread": TARGET_SPREAD, "max_windows": MAX_WINDOWS,
                  "spread": max(floor.get("fp32_spread", 0.0), floor.get("int8_spread", 0.0))})  # fmt: skip
    return floor


def remeasure_floor(floor: dict[str, Any], beaten: list[str]) -> dict[str, Any]:
    """A row that ran faster than the floor proves the floor's GEMMs ran slow (a busy core, a frequency dip): measure
    again with the same settings and keep, for each kind, the faster of the two rates. ``beaten`` names the rows."""
    again = measure_floor(min_time=floor.get("min_time_s", 0.3), windows=floor.get("windows", 3),
                          sizes=tuple(floor.get("sizes") or SIZES))  # fmt: skip
    merged = dict(floor)
    for kind in ("fp32", "int8"):
        if (again.get(f"{kind}_macs_per_s") or 0) > (floor.get(f"{kind}_macs_per_s") or 0):
            for key in (f"{kind}_macs_per_s", f"{kind}_method", f"{kind}_candidates", f"{kind}_spread"):
                merged[key] = again.get(key)
    merged["spread"] = max(merged.get("fp32_spread") or 0.0, merged.get("int8_spread") or 0.0)
    merged["remeasured"] = {"because": beaten, "first": {k: floor.get(f"{k}_macs_per_s") for k in ("fp32", "int8")},
                            "second": {k: again.get(f"{k}_macs_per_s") for k in ("fp32", "int8")}}  # fmt: skip
    return merged


def measurement_warnings(machine: dict[str, Any], floor: dict[str, Any] | None) -> list[str]:
    """Why a run's figures may not be the machine's: busy at the start or end, or a compute floor whose best
    windows disagree by more than LARGE_SPREAD. Busy is decided on what other processes used during a one-second
    sample (over BUSY_OTHER cores per core) where the bench took one; on the 1-minute load average (over
    BUSY_LOAD per core) otherwise, which also counts the bench's own process and the stage before it."""
    out = []
    cores = machine.get("cores") or 1
    states = {w: machine.get(f"state_{w}") or {} for w in ("start", "end")}
    if any(s.get("other_cpu") is not None for s in states.values()):
        seen = {w: s.get("other_cpu") for w, s in states.items()}
        what, limit, unit, verb = "other processes kept", BUSY_OTHER * cores, " cores", " busy"
        rule = f"> {limit:g}"
    else:
        seen = {w: (s.get("load_avg") or [None])[0] for w, s in states.items()}
        what, limit, unit, verb = "1-minute load average", BUSY_LOAD * cores, "", ""
        rule = f"> {BUSY_LOAD:g} per core"
    busy = {w: v for w, v in seen.items() if v is not None and v > limit}
    if busy:
        text = ", ".join(f"{v:.2f}{unit} at the {w}" for w, v in busy.items())
        out.append(f"BUSY MACHINE: {what} {text} of the bench{verb} on {cores} cores ({rule}): latencies and the floor "
                   "may be inflated; rerun on a quiet machine for figures to quote")  # fmt: skip
    spread = (floor or {}).get("spread")
    if spread is not None and spread > LARGE_SPREAD:
        out.append(f"UNSTABLE FLOOR: the compute floor's best windows differ by {spread:.0%} (> "
                   f"{LARGE_SPREAD:.0%}): × floor figures are uncertain by as much")  # fmt: skip
    return out


def floor_us(macs: int | None, precision: str, batch: int, threads: int, floor: dict[str, Any]) -> float | None:
    """The least time ``batch`` inferences of ``macs`` multiply-adds can take: int8 kernels for int8 and dynamic
    files, fp32 for the rest (fp16 .tflite runs in fp32 on CPUs); one core's rate times the threads used."""
    if not macs or not floor:
        return None
    kind = "int8" if precision in ("int8", "dynamic") else "fp32"
    rate = floor.get(f"{kind}_macs_per_s")
    if not rate:
        return None
    return macs * batch / (rate * threads) * 1e6
