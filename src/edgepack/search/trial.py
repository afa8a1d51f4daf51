"""One search trial: its recipe run by `edgepack run` in a child process, then measured from the run directory.

The child process keeps TensorFlow out of the Ray worker (no graph, thread pool or seed state leaks from one
trial into the next) and dies with it (PR_SET_PDEATHSIG), so killing a trial's worker stops its training too.
Standard library only: Ray imports this module in its workers.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import tomllib

import edgepack
from edgepack.errors import EdgepackError
from edgepack.files import atomic_write_json, atomic_write_text
from edgepack.recipe import Recipe, to_toml
from edgepack.search.space import FORMAT_OF, quantization_of, trial_recipe

TRIAL_STAGES = "train,compress,export,bench"  # the search writes one report for all trials
RESULT = "trial.json"  # written last: a trial directory holding it is measured and never rerun


class TrialFailed(EdgepackError):
    """A trial's pipeline run failed; the message is the run's last error line."""

    exit_code = 1


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    with contextlib.suppress(Exception):
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def _child_env() -> dict[str, str]:
    """The worker's environment, with this edgepack's source first on the path (the child runs the same code)."""
    env = dict(os.environ)
    src = str(Path(edgepack.__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join([src, *([env["PYTHONPATH"]] if env.get("PYTHONPATH") else [])])
    return env


def run_trial(trial_dir: str | Path, config: dict[str, Any], base: str, max_drop: float,
              keep: bool = False) -> dict[str, Any]:  # fmt: skip
    """Run one trial of the base recipe ``base`` (TOML text) into ``trial_dir`` (recipe.toml, log.txt, run/,
    trial.json) and return its metrics."""
    trial_dir = Path(trial_dir)
    done = trial_dir / RESULT
    if done.is_file():  # measured before an interruption: reuse, do not rerun
        return json.loads(done.read_text())
    if trial_dir.exists():  # a run cut short (Ctrl-C, a killed worker): start it again from nothing
        shutil.rmtree(trial_dir)
    trial_dir.mkdir(parents=True)
    recipe = trial_recipe(Recipe.from_dict(tomllib.loads(base)), config, max_drop)
    atomic_write_json(trial_dir / "config.json", config)
    recipe_path = atomic_write_text(trial_dir / "recipe.toml", to_toml(recipe, _header(config)))
    run_dir = trial_dir / "run"
    cmd = [sys.executable, "-m", "edgepack", "run", str(recipe_path), "--out", str(run_dir),
           "--stages", TRIAL_STAGES, "-q"]  # fmt: skip
    with open(trial_dir / "log.txt", "wb") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=_child_env(),
                                preexec_fn=_die_with_parent if sys.platform == "linux" else None)  # fmt: skip
        atomic_write_text(trial_dir / "pid", f"{os.getpid()} {proc.pid}\n")
        rc = proc.wait()
    if rc != 0:
        raise TrialFailed(f"edgepack run exited {_exit_text(rc)}: {_last_error(trial_dir / 'log.txt')}")
    metrics = measure(run_dir, config, max_drop)
    if not keep:
        trim(run_dir, metrics["artifact"])
    atomic_write_json(done, metrics)
    return metrics


def _header(config: dict[str, Any]) -> str:
    values = ", ".join(f"{k}={v}" for k, v in sorted(config.items()))
    return f"A trial of `edgepack search`: {values}\nReproduce: edgepack run THIS.toml --out DIR"


def _exit_text(rc: int) -> str:
    if rc < 0:
        with contextlib.suppress(ValueError):
            return f"by signal {signal.Signals(-rc).name}"
    return f"with code {rc}"


def _last_error(log: Path) -> str:
    lines = [ln.strip() for ln in log.read_text(errors="replace").splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith("edgepack: ")]
    return (errors or lines or ["(no output)"])[-1][:500]


def chosen_artifact(manifest: dict[str, Any], config: dict[str, Any]) -> dict[str, Any]:
    """The trial's shipped file: its format and precision, made from the last model the recipe produced."""
    fmt = FORMAT_OF[config["runtime"]]
    quant = quantization_of(config)
    arts = manifest["artifacts"]
    # the host's file: not the all-int8 twin a mixed .tflite gets for microcontrollers (settings.mcu)
    exports = [a for a in arts if a["stage"] == "export" and a["format"] == fmt
               and not a.get("settings", {}).get("mcu")]  # fmt: skip
    if quant == "qat":
        found = [a for a in exports if a.get("settings", {}).get("from_qat")]
    else:
        last_float = [a["name"] for a in arts if a["format"] == "keras" and a["stage"] in ("train", "prune", "cluster")]
        found = [a for a in exports if a["precision"] == quant and a["parent"] == last_float[-1]]
    if len(found) != 1:
        raise TrialFailed(f"trial run: expected one {fmt} {quant} export, found {[a['name'] for a in found]}")
    return found[0]


def measure(run_dir: str | Path, config: dict[str, Any], max_drop: float) -> dict[str, Any]:
    """Accuracy of the shipped file in its own runtime, its p50 latency (batch 1) and gzip size."""
    run_dir = Path(run_dir)
    manifest = json.loads((run_dir / "manifest.json").read_text())
    results = json.loads((run_dir / "bench" / "results.json").read_text())["results"]
    art = chosen_artifact(manifest, config)
    rows = [r for r in results if r["artifact"] == art["name"] and r["runtime"] == config["runtime"]
            and r["threads"] == config["threads"] and r["batch"] == 1]  # fmt: skip
    if len(rows) != 1:
        raise TrialFailed(
            f"trial run: expected one bench row for {art['name']} in {config['runtime']}, got {len(rows)}"
        )
    row = rows[0]
    baseline = next(a for a in manifest["artifacts"] if a["stage"] == "train")
    base_acc = float(baseline["metrics"]["accuracy"])
    drop = round((base_acc - float(row["accuracy"])) * 100, 4)
    return {
        "artifact": art["name"], "file": str(run_dir / art["path"]), "format": art["format"],
        "precision": art["precision"], "runtime": config["runtime"], "threads": config["threads"],
        "accuracy": float(row["accuracy"]), "baseline_accuracy": base_acc, "drop_points": drop,
        "within_budget": drop <= max_drop, "latency_us_p50": float(row["latency_us"]["p50"]),
        "gzip_bytes": int(art["metrics"]["gzip_bytes"]), "size_bytes": int(art["metrics"]["size_bytes"]),
        "gzip_ratio_vs_baseline_tflite": art["metrics"].get("gzip_ratio_vs_baseline_tflite"),
        "sparsity": art["metrics"].get("sparsity"),
    }  # fmt: skip


def trim(run_dir: Path, artifact: str) -> None:
    """Keep the manifest, the bench rows and the chosen file with its bundle; drop models, data and other exports."""
    keep = {f"{artifact}.tflite", f"{artifact}.onnx", f"{artifact}.json"}
    for sub in run_dir.iterdir():
        if sub.name in ("manifest.json", "bench"):
            continue
        if sub.name == "export" and sub.is_dir():
            for f in sub.iterdir():
                if f.name not in keep:
                    shutil.rmtree(f) if f.is_dir() else f.unlink()
        elif sub.is_dir():
            shutil.rmtree(sub)
        else:
            sub.unlink()
