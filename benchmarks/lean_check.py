"""Acceptance figures of the lean installs: no TensorFlow, environment size, cold start, `edgepack predict`.

Run with the lean environment's own Python (made by `make lean-check`):

    .venv-lean/bin/python benchmarks/lean_check.py [--expect litert,onnxruntime] [--repeats 7] [--json]
    python benchmarks/lean_check.py --requirements litert|onnx|all    # the device install's pip requirements

`make lean-check` builds three environments: the base install (`pip install .`: both engines), and the two
one-engine device installs (numpy, Pillow and one engine from pyproject's pins, then `pip install --no-deps .`).
Checks (exit 1 if one fails): the environment has exactly the engines ``--expect`` names; importing
edgepack.runtime and predicting leaves tensorflow out of sys.modules; `edgepack predict --json` on PNGs of the
fixture eval images agrees with the Keras reference probabilities (>= 99% of labels for fp32 files, >= 98% for
int8) for every file whose engine is installed; for the others it exits 2 with one line naming the missing
engine. Reports, against the goals (not gates: the engines alone exceed the size goal): the environment's size
per distribution (goal <= 120 MB) and the cold start per format, a fresh process doing import + load + first
prediction (goal <= 250 ms, median of --repeats).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FIX = ROOT / "tests" / "fixtures" / "runtime"
MODELS = ["digits-tflite-fp32", "digits-tflite-int8", "digits-onnx-fp32", "digits-onnx-int8"]
ENGINES = {"litert": ("tflite", "ai-edge-litert", "LiteRT"), "onnxruntime": ("onnx", "onnxruntime", "ONNX Runtime")}
DEVICE_INSTALLS = {"litert": ("litert",), "onnx": ("onnxruntime",), "all": ("litert", "onnxruntime")}
AGREEMENT_GOAL = {"fp32": 0.99, "int8": 0.98}
SIZE_GOAL_MB, COLD_GOAL_MS = 120, 250

COLD = """
import time
c0, t0 = time.process_time(), time.perf_counter()
import numpy as np
import edgepack.runtime
t1 = time.perf_counter()
p = edgepack.runtime.load({path!r})
t2 = time.perf_counter()
p.predict(np.zeros(p.input_spec.shape, np.uint8))
t3, c3 = time.perf_counter(), time.process_time()
import sys
print(t1 - t0, t2 - t1, t3 - t2, int("tensorflow" in sys.modules), c3 - c0)
"""


def cold_start(path: Path, repeats: int) -> dict:
    """Median ms of import / load / first prediction / total in a fresh process, and the process wall time."""
    import time

    rows, walls = [], []
    for _ in range(repeats):
        t = time.perf_counter()
        out = subprocess.run(
            [sys.executable, "-c", COLD.format(path=str(path))], capture_output=True, text=True, check=True
        )
        walls.append(time.perf_counter() - t)
        rows.append([float(v) for v in out.stdout.split()])
    med = [statistics.median(r[i] for r in rows) * 1000 for i in range(3)]
    totals = [sum(r[:3]) * 1000 for r in rows]
    cpu = [r[4] * 1000 for r in rows]  # CPU time of the process: leaves out waiting for a core on a busy machine
    return {"import_ms": round(med[0], 1), "load_ms": round(med[1], 1), "first_predict_ms": round(med[2], 1),
            "cold_start_ms": round(statistics.median(totals), 1), "cold_start_cpu_ms": round(statistics.median(cpu), 1),
            "process_wall_ms": round(statistics.median(walls) * 1000, 1), "load_average": os.getloadavg()[0],
            "tensorflow_imported": any(r[3] for r in rows), "repeats": repeats}  # fmt: skip


def env_size_mb() -> float:
    total = 0
    for dirpath, _, files in os.walk(sys.prefix):
        for f in files:
            p = os.path.join(dirpath, f)
            if not os.path.islink(p):
                total += os.path.getsize(p)
    return round(total / 2**20, 1)


def distribution_sizes_mb() -> dict[str, float]:
    """MB per installed distribution (its RECORDed files), largest first: what a device install is made of."""
    from importlib import metadata

    sizes = {}
    for dist in metadata.distributions():
        total = 0
        for f in dist.files or []:
            path = Path(dist.locate_file(f))
            if path.is_file() and not path.is_symlink():
                total += path.stat().st_size
        sizes[dist.metadata["Name"]] = round(total / 2**20, 1)
    return dict(sorted(sizes.items(), key=lambda kv: -kv[1]))


def requirements(install: str) -> list[str]:
    """pyproject's pinned requirements for a device install: numpy, Pillow and the engine(s) of ``install``."""
    import tomllib

    deps = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]["dependencies"]
    drop = {ENGINES[e][1] for e in ENGINES if e not in DEVICE_INSTALLS[install]}
    return [d for d in deps if not any(d.startswith(name) for name in drop)]


def installed_engines() -> list[str]:
    from edgepack.runtime.predictor import installed_engines as found

    return list(found())


def refusal(name: str, tmp: Path) -> dict:
    """`edgepack predict` on a file whose engine is not installed: exit 2 and one line naming the engine."""
    import numpy as np
    from PIL import Image

    edgepack = Path(sys.executable).parent / "edgepack"
    fmt = name.split("-")[1]
    engine = next(label for f, _, label in ENGINES.values() if f == fmt)
    png = tmp / "refusal.png"
    Image.fromarray(np.load(FIX / "eval.npz")["x"][0][..., 0]).save(png)
    out = subprocess.run([str(edgepack), "predict", str(FIX / f"{name}.json"), str(png)], capture_output=True,
                         text=True)  # fmt: skip
    lines = out.stderr.strip().splitlines()
    ok = out.returncode == 2 and len(lines) == 1 and f"needs the {engine} engine" in lines[0] and not out.stdout
    return {"exit": out.returncode, "stderr": out.stderr.strip(), "ok": ok}


def predict_agreement(name: str, tmp: Path) -> dict:
    import numpy as np
    from PIL import Image

    ev = np.load(FIX / "eval.npz")
    paths = []
    for i, img in enumerate(ev["x"]):
        paths.append(str(tmp / f"{i}.png"))
        Image.fromarray(img[..., 0]).save(paths[-1])
    edgepack = Path(sys.executable).parent / "edgepack"
    out = subprocess.run([str(edgepack), "predict", str(FIX / f"{name}.json"), *paths, "--json"],
                         capture_output=True, text=True, check=True)  # fmt: skip
    rows = json.loads(out.stdout)["predictions"]
    got = np.array([r["index"] for r in rows])
    agreement = float((got == ev["keras_probs"].argmax(1)).mean())
    return {"n": len(rows), "agreement": agreement, "goal": AGREEMENT_GOAL[name.rsplit("-", 1)[1]]}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=7, help="fresh processes per format for the cold start median")
    ap.add_argument("--expect", default=None, help="the engines this environment must have: litert,onnxruntime")
    ap.add_argument("--requirements", choices=sorted(DEVICE_INSTALLS), default=None,
                    help="print the pip requirements of a device install and exit")  # fmt: skip
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    if args.requirements:
        print(" ".join(requirements(args.requirements)))
        return 0
    engines = installed_engines()
    report: dict = {"python": sys.executable, "engines": engines, "env_size_mb": env_size_mb(),
                    "distributions_mb": distribution_sizes_mb(), "size_goal_mb": SIZE_GOAL_MB,
                    "cold_goal_ms": COLD_GOAL_MS, "models": {}}  # fmt: skip
    try:
        import tensorflow  # noqa: F401

        report["tensorflow_installed"] = True
    except ImportError:
        report["tensorflow_installed"] = False
    failed = []
    if args.expect is not None and sorted(args.expect.split(",")) != sorted(engines):
        failed.append(f"engines installed: {', '.join(engines) or 'none'}; expected {args.expect}")
    with tempfile.TemporaryDirectory() as tmp:
        for name in MODELS:
            backend = next(b for b, (f, _, _) in ENGINES.items() if f == name.split("-")[1])
            if backend not in engines:
                row = {"refused": refusal(name, Path(tmp))}
                if not row["refused"]["ok"]:
                    failed.append(f"{name}: not refused with one line naming the engine: {row['refused']}")
                report["models"][name] = row
                continue
            row = {
                "cold": cold_start(FIX / f"{name}.json", args.repeats),
                "predict": predict_agreement(name, Path(tmp)),
            }
            report["models"][name] = row
            if row["cold"]["tensorflow_imported"]:
                failed.append(f"{name}: tensorflow imported")
            if row["predict"]["agreement"] < row["predict"]["goal"]:
                failed.append(f"{name}: agreement {row['predict']['agreement']:.3f} < {row['predict']['goal']}")
    report["failed"] = failed
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        top = ", ".join(f"{k} {v}" for k, v in list(report["distributions_mb"].items())[:6])
        print(f"environment {sys.prefix} (engines: {', '.join(engines) or 'none'}): {report['env_size_mb']} MB "
              f"(goal <= {SIZE_GOAL_MB} MB; largest: {top}); tensorflow installed: {report['tensorflow_installed']}")  # fmt: skip
        for name, row in report["models"].items():
            if "refused" in row:
                r = row["refused"]
                print(f"  {name:<20} refused: exit {r['exit']}: {r['stderr']}")
                continue
            c, p = row["cold"], row["predict"]
            print(f"  {name:<20} cold start {c['cold_start_ms']:6.1f} ms (import {c['import_ms']:.1f} + load "
                  f"{c['load_ms']:.1f} + first predict {c['first_predict_ms']:.1f}; CPU time {c['cold_start_cpu_ms']:.0f} ms; "
                  f"process {c['process_wall_ms']:.0f} ms; load average {c['load_average']:.1f}; goal <= {COLD_GOAL_MS})  predict agreement {p['agreement']:.3f} on {p['n']} (goal >= {p['goal']})  "
                  f"tensorflow imported: {c['tensorflow_imported']}")  # fmt: skip
        print("FAILED: " + "; ".join(failed) if failed else "lean check passed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
