"""Cold start and peak memory: a fresh Python process imports the runtime, loads the file, runs one inference.

The child measures itself (from before its first edgepack import to the first result) and reports its own peak
resident set size, so neither the parent's interpreter nor its loaded engines are counted.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

_LEAN = """
import sys, time
t0 = time.perf_counter_ns()
import numpy as np
from edgepack.runtime import load
p = load(sys.argv[1], backend=sys.argv[2], threads=int(sys.argv[3]))
x = np.load(sys.argv[4])
p.predict(x) if p.model.is_classifier else p.run(x)
t1 = time.perf_counter_ns()
"""

_KERAS = """
import sys, time
t0 = time.perf_counter_ns()
import numpy as np
from edgepack.tf import tf, keras
from edgepack.bench.keras_ref import load_keras
m = load_keras(sys.argv[1])
x = np.load(sys.argv[4])
x = x.astype(np.float32) / 255.0 if x.dtype == np.uint8 else x  # the parent passes the preprocessed input
m(x, training=False)
t1 = time.perf_counter_ns()
"""

# Linux keeps ru_maxrss across fork+exec, so a child of a big parent (one that loaded TensorFlow) would report
# the parent's peak; VmHWM in /proc/self/status belongs to this process image alone. ru_maxrss elsewhere.
_REPORT = """
import json, resource, sys
try:
    with open("/proc/self/status") as f:
        rss_mb = next(int(line.split()[1]) for line in f if line.startswith("VmHWM:")) / 1024
except (OSError, StopIteration):
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    rss_mb = rss / (1 << 20) if sys.platform == "darwin" else rss / 1024  # bytes on macOS, KiB on Linux
print(json.dumps({"cold_start_ms": (t1 - t0) / 1e6, "peak_rss_mb": rss_mb}))
"""


def child_env(threads: int | None = None) -> dict[str, str]:
    """This process's environment with edgepack's source folder first on PYTHONPATH (works uninstalled too).

    ``threads`` pins TensorFlow's pools; they must be set before TF starts (edgepack.tf initialises the device on
    import), and the environment is the only door that early."""
    env = dict(os.environ)
    if threads is not None:
        env.update(TF_NUM_INTRAOP_THREADS=str(threads), TF_NUM_INTEROP_THREADS="1")
    src = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (src, env.get("PYTHONPATH", "")) if p)
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    return env


def cold_start(path: str | Path, runtime: str, threads: int, x_one: np.ndarray, timeout: float = 300) -> dict[str, Any]:
    """{cold_start_ms, cold_start_process_ms, peak_rss_mb} of a fresh process running one inference of ``path``."""
    code = (_KERAS if runtime == "keras" else _LEAN) + _REPORT
    with tempfile.TemporaryDirectory(prefix="edgepack-cold-") as tmp:
        xfile = Path(tmp) / "x.npy"
        np.save(xfile, np.ascontiguousarray(x_one[:1]))
        start = time.perf_counter_ns()
        proc = subprocess.run([sys.executable, "-c", code, str(path), runtime, str(threads), str(xfile)],
                              env=child_env(threads), capture_output=True, text=True, timeout=timeout)  # fmt: skip
        wall_ms = (time.perf_counter_ns() - start) / 1e6
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise RuntimeError(f"cold start of {path} in {runtime} failed: {last}")
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    out["cold_start_process_ms"] = wall_ms
    return out
