"""`edgepack bench`: every artifact x runtime x threads x batch, measured the same way, into results.json.

For each exported file (and, when TensorFlow is installed, each Keras model as a reference): latency through
``time_calls`` with the engine built once, of two calls in interleaved windows: ``latency_us`` is what a device
program pays, ``predict()`` from uint8 pixels (preprocessing, engine call, output head), and the recommendation,
the × floor figure and the headline use it; ``engine_latency_us`` is the engine call alone (``run_prepared`` on a
prepared input), kept beside it with ``predict_over_engine`` (p50 / p50); accuracy on ``export/eval.npz`` in that runtime; cold start and peak RSS
in a fresh process; size, gzip size, parameters, multiply-adds, sparsity; and the compute floor measured in the
same run, so every row says how far it is from what this machine can do.
"""

from __future__ import annotations

import datetime as _dt
import importlib.util
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgepack import __version__
from edgepack.errors import ConfigError, ModelLoadError
from edgepack.files import gzip_size
from edgepack.machine import machine_info, machine_state
from edgepack.recipe import BenchSettings, Runtime

log = logging.getLogger(__name__)

FORMAT_RUNTIMES = {"onnx": ("onnxruntime",), "tflite": ("litert",), "keras": ("keras",)}
PARITY_KEYS = ("passed", "max_abs_diff", "top1_agreement")


@dataclass
class Target:
    """One file to benchmark, with what the manifest or bundle knows about it."""

    name: str
    path: Path  # what the runtime loads: the bundle .json when there is one, else the model file
    file: Path  # the model file itself (size, hash, MACs)
    format: str
    precision: str
    source: str | None = None
    parity: dict[str, Any] | None = None
    metrics: dict[str, Any] = field(default_factory=dict)
    eval_npz: Path | None = None
    model_spec: dict[str, Any] | None = None  # the run's model description (Keras rows preprocess with it)
    float_layers: list[str] = field(default_factory=list)  # int8 files with layers a latency plan left float


# -- what to benchmark ---------------------------------------------------------------------------------------------


def targets_from_run(run_path: Path) -> list[Target]:
    """Every export (tflite/onnx) and Keras model a run directory's manifest lists."""
    from edgepack.manifest import RunDir

    run = RunDir.open(run_path)
    by_name = {a.name: a for a in run.artifacts}
    eval_npz = run.path / "export" / "eval.npz"
    targets = []
    for a in run.artifacts:
        if a.format not in FORMAT_RUNTIMES or (a.format != "keras" and a.stage != "export"):
            continue
        file = run.file(a)
        if not file.is_file():
            raise ModelLoadError(f"run directory {run.path}: {a.path} is listed in the manifest but missing")
        bundle = file.with_suffix(".json")
        metrics = dict(a.metrics)
        parent = by_name.get(a.parent or "")
        for key in ("params", "nonzero_params", "sparsity", "macs"):  # exports inherit the source model's counts
            if key not in metrics and parent is not None and key in parent.metrics:
                metrics[key] = parent.metrics[key]
        parity = a.parity
        if parity is None and bundle.is_file():
            parity = _read_json(bundle).get("parity")
        targets.append(Target(a.name, bundle if bundle.is_file() and a.format != "keras" else file, file, a.format,
                              a.precision, a.parent, parity, metrics, eval_npz if eval_npz.is_file() else None,
                              model_spec=run.model_spec().to_dict(),
                              float_layers=list(a.settings.get("float_layers") or [])))  # fmt: skip
    if not any(t.format != "keras" for t in targets):  # Keras rows need export/eval.npz: nothing to measure
        raise ConfigError(f"run directory {run.path}: no exported files to benchmark; run `edgepack export` first")
    return targets


def _read_json(path: Path) -> dict[str, Any]:
    """A bundle as a dict, or a one-line ModelLoadError."""
    from edgepack.errors import user_input

    with user_input(ModelLoadError, f"{path}: not a bundle"):
        data = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(data, dict):
        raise ModelLoadError(f"{path}: not a bundle: expected a JSON object")
    return data


def target_from_file(path: Path) -> Target:
    """A bare .onnx / .tflite or a bundle .json; eval.npz beside it is used for accuracy."""
    if not path.is_file():
        raise ConfigError(f"{path}: no such file; expected a run directory, a .onnx, .tflite or bundle .json")
    bundle: dict[str, Any] = {}
    file = path
    if path.suffix == ".json":
        bundle = _read_json(path)
        name = bundle.get("file")
        if not isinstance(name, str) or not name or Path(name).name != name:
            raise ModelLoadError(f"{path}: bundle file {name!r}: expected a file name beside the bundle")
        file = path.parent / name
    elif path.with_suffix(".json").is_file():
        bundle = _read_json(path.with_suffix(".json"))
    fmt = bundle.get("format") or {".onnx": "onnx", ".tflite": "tflite", ".keras": "keras"}.get(file.suffix)
    if fmt is None:
        raise ConfigError(
            f"{path}: unknown model type '{file.suffix}'; expected .onnx, .tflite, .keras or a bundle .json"
        )
    eval_npz = file.parent / "eval.npz"
    precision = bundle.get("precision") or _file_precision(file, fmt)
    return Target(file.stem, path, file, fmt, precision, (bundle.get("source") or {}).get("artifact"),
                  bundle.get("parity"), {}, eval_npz if eval_npz.is_file() else None,
                  model_spec=bundle.get("model"), float_layers=list(bundle.get("float_layers") or []))  # fmt: skip


def _file_precision(file: Path, fmt: str) -> str:
    """A bare file's precision read from the file itself (QDQ / QLinear / integer tensors), so its floor uses the
    right rate; "unknown" only where the file cannot be read here (an .onnx without the onnx package)."""
    if fmt == "keras":
        return "fp32"
    try:
        from edgepack.inspect import describe

        return str(describe(file)["precision"])
    except Exception:  # noqa: BLE001 - a lean install without onnx; a damaged file fails later, at load
        return "unknown"


def collect_targets(inputs: list[str], runtimes: tuple[str, ...] | None = None) -> list[Target]:
    """Every target of ``inputs``; with ``runtimes``, refuse when none of them runs any target."""
    targets: list[Target] = []
    for item in inputs:
        p = Path(item)
        targets.extend(targets_from_run(p) if p.is_dir() else [target_from_file(p)])
    if runtimes is not None and not any(set(FORMAT_RUNTIMES.get(t.format, ())) & set(runtimes) for t in targets):
        formats = sorted({t.format for t in targets})
        raise ConfigError(f"--runtimes {','.join(runtimes)}: runs none of the files given ({', '.join(formats)}); "
                          "onnx runs in onnxruntime, tflite in litert, keras in keras")  # fmt: skip
    names = [t.name for t in targets]
    if len(set(names)) != len(names):  # several runs: keep rows apart by prefixing the folder
        for t in targets:
            t.name = (
                f"{t.file.parent.parent.name}/{t.name}" if t.file.parent.name in ("export", "models") else str(t.file)
            )
    return targets


def keras_available() -> bool:
    return importlib.util.find_spec("tensorflow") is not None and importlib.util.find_spec("tf_keras") is not None


def resolve_runtimes(runtimes: tuple[Runtime, ...] | None) -> tuple[str, ...]:
    """The --runtimes list; by default the lean runtimes installed (a device may carry one), plus Keras reference rows
    when TensorFlow is installed."""
    if runtimes is None:
        from edgepack.runtime.predictor import installed_engines

        return installed_engines() + (("keras",) if keras_available() else ())
    names = tuple(r.value for r in runtimes)
    from edgepack.runtime.predictor import installed_engines

    missing = [n for n in names if n in ("onnxruntime", "litert") and n not in installed_engines()]
    if missing:
        raise ConfigError(f"--runtimes {','.join(names)}: {', '.join(missing)} is not installed here (installed: "
                          f"{', '.join(installed_engines()) or 'no engine'}); install it or drop it")  # fmt: skip
    if "keras" in names and not keras_available():
        raise ConfigError("--runtimes keras: TensorFlow and tf_keras are not installed; install edgepack[train] or drop keras")  # fmt: skip
    return names


# -- results.json --------------------------------------------------------------------------------------------------

ROW_KEY = ("artifact", "format", "precision", "runtime", "threads", "batch", "call")
SAME_MACHINE = ("cpu_model", "arch", "label", "emulated")


def check_same_machine(path: Path, label: str | None = None) -> None:
    """Refuse (ConfigError) a results.json at ``path`` that another machine wrote: its rows cannot be merged with
    this machine's. Called before any timing; ``merge_results`` checks again when it writes."""
    from edgepack.machine import machine_info

    try:
        old = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError, UnicodeDecodeError, RecursionError):
        raise ConfigError(f"{path}: exists and is not valid JSON; move it away or give --out FILE") from None
    merge_results(old, {"machine": machine_info(label=label), "results": [], "settings": {}}, path)


def merge_results(old: Any, new: dict[str, Any], where: Path) -> dict[str, Any]:
    """``new`` plus the rows of ``old`` it did not measure again (same artifact, runtime, threads, batch, call)."""
    if (
        not isinstance(old, dict)
        or not isinstance(old.get("results"), list)
        or not isinstance(old.get("machine"), dict)
    ):
        raise ConfigError(f"{where}: exists and is not an edgepack results.json; move it away or give --out FILE")
    om, nm = old["machine"], new["machine"]
    if any(om.get(k) != nm.get(k) for k in SAME_MACHINE):
        raise ConfigError(f"{where}: holds results from another machine ({om.get('label')}, {om.get('cpu_model')}); "
                          "give --out FILE for this machine's results and compare them with `edgepack report`")  # fmt: skip
    measured = {tuple(r.get(k) for k in ROW_KEY) for r in new["results"]}
    kept = [r for r in old["results"] if isinstance(r, dict) and tuple(r.get(k) for k in ROW_KEY) not in measured]
    merged = dict(new)
    merged["results"] = kept + list(new["results"])
    settings = dict(new["settings"])
    for key in ("runtimes", "threads", "batch", "inputs"):
        before = (old.get("settings") or {}).get(key) or []
        settings[key] = (
            list(dict.fromkeys([*before, *settings.get(key, [])])) if isinstance(before, list) else settings[key]
        )
    merged["settings"] = settings
    if kept:
        merged["created_first"] = old.get("created_first") or old.get("created")
    return merged


def save_results(path: Path, results: dict[str, Any], merge: bool) -> dict[str, Any]:
    """Write results.json atomically; with ``merge``, under the run's lock, keep the rows already there."""
    from edgepack.files import atomic_write_json
    from edgepack.locking import locked

    path = Path(path)
    if not merge:
        atomic_write_json(path, results)
        return results
    path.parent.mkdir(parents=True, exist_ok=True)
    with locked(path.parent.parent / ".lock", f"run directory {path.parent.parent}"):  # the run's lock (manifest.LOCK)
        if path.is_file():
            try:
                old = json.loads(path.read_text(encoding="utf-8"))
            except (json.JSONDecodeError, UnicodeDecodeError, RecursionError):
                raise ConfigError(f"{path}: exists and is not valid JSON; move it away or give --out FILE") from None
            results = merge_results(old, results, path)
        atomic_write_json(path, results)
    return results


# -- measuring ------------------------------------------------------------------------------------------------------


def _eval_set(target: Target) -> tuple[np.ndarray | None, np.ndarray | None]:
    if target.eval_npz is None:
        return None, None
    with np.load(target.eval_npz) as d:
        return d["x"], d["y"].astype(np.int64)


def _batch_of(x: np.ndarray, batch: int) -> np.ndarray:
    """The first ``batch`` eval images (repeated when the set is smaller): real inputs, not zeros."""
    return np.ascontiguousarray(np.resize(x, (batch, *x.shape[1:])))


def _accuracy(pred: Any, x: np.ndarray, y: np.ndarray, chunk: int = 256) -> float:
    hits = 0
    for i in range(0, len(x), chunk):
        hits += int((pred.predict(x[i : i + chunk]).argmax(axis=1) == y[i : i + chunk]).sum())
    return hits / len(x)


def _base_row(t: Target, runtime: str) -> dict[str, Any]:
    m = t.metrics
    parity = {k: (t.parity or {}).get(k) for k in PARITY_KEYS} if t.parity else None
    if t.format == "keras":  # the model every export is checked against: the reference agrees with itself
        parity = {"passed": True, "max_abs_diff": 0.0, "top1_agreement": 1.0, "reference": True}
    return {
        "artifact": t.name, "path": str(t.file), "format": t.format, "precision": t.precision, "runtime": runtime,
        "source": t.source, "size_bytes": t.file.stat().st_size if t.file.is_file() else m.get("size_bytes"),
        "gzip_bytes": gzip_size(t.file) if t.file.is_file() else m.get("gzip_bytes"),
        "params": m.get("params"), "nonzero_params": m.get("nonzero_params"), "sparsity": m.get("sparsity"),
        "macs": m.get("macs"), "parity": parity,
        "mixed": bool(t.float_layers), "float_layers": list(t.float_layers),
    }  # fmt: skip


def _timing_fields(t: Any) -> dict[str, Any]:
    return {"latency_us": t.latency_us(), "throughput_per_s": t.throughput_per_s, "windows": t.windows,
            "warmup_calls": t.warmup_calls, "window_p50_us": list(t.window_p50)}  # fmt: skip


def _bench_lean(t: Target, runtime: str, settings: BenchSettings, x: np.ndarray | None, y: np.ndarray | None,
                progress: Any) -> list[dict[str, Any]]:  # fmt: skip
    from edgepack.bench.coldstart import cold_start
    from edgepack.runtime import load
    from edgepack.timing import time_calls

    base = _base_row(t, runtime)
    accuracy = None
    accuracy_note = None  # why there is no accuracy figure (a non-classifier has none to give)
    rows = []
    for threads in settings.threads:
        pred = load(t.path, backend=runtime, threads=threads)
        try:
            if x is None:  # no eval set: time on mid-grey images of the model's own shape
                x = np.full((1, *pred.input_spec.shape), 128, np.uint8)
            classifier = pred.model.is_classifier
            if not classifier:
                accuracy_note = f"n/a: not a classifier ({len(pred.outputs)} outputs)"
            elif accuracy is None and y is not None:
                accuracy = _accuracy(pred, x, y)
            call = pred.predict if classifier else pred.run  # a non-classifier: every output, by name
            for batch in settings.batch:
                pixels = _batch_of(x, batch)
                inp = pred.prepare(pixels)
                # Interleaved windows: the user's call and the engine call alone see the same machine load.
                timings = time_calls({"predict": lambda p=pixels, call=call: call(p),
                                      "engine": lambda inp=inp, pred=pred: pred.run_prepared(inp)},
                                     batch=batch, min_time=settings.min_time, windows=settings.windows)  # fmt: skip
                end, engine = timings["predict"], timings["engine"]
                rows.append({**base, "threads": threads, "batch": batch,
                             "call": "predict(uint8)" if classifier else "run(uint8)",
                             "delegate": pred.delegate, **_timing_fields(end), "engine_call": "run_prepared",
                             "engine_latency_us": engine.latency_us(), "engine_throughput_per_s": engine.throughput_per_s,
                             "predict_over_engine": end.p50 / engine.p50 if engine.p50 else None,
                             "plan": pred.plan})  # fmt: skip
                progress(f"{t.name} {runtime} threads={threads} batch={batch}: predict p50 {end.p50:.1f} µs "
                         f"(engine call {engine.p50:.1f} µs)")  # fmt: skip
        finally:
            pred.close()
    cold = cold_start(t.path, runtime, settings.threads[0], x[:1])
    for r in rows:
        r.update(accuracy=accuracy, n_eval=None if y is None or accuracy is None else int(len(y)), **cold)
        if accuracy_note:
            r["accuracy_note"] = accuracy_note
    return rows


def _bench_keras(targets: list[Target], settings: BenchSettings, progress: Any) -> list[dict[str, Any]]:
    from edgepack.bench.coldstart import cold_start
    from edgepack.bench.keras_ref import keras_rows

    with_eval = [t for t in targets if t.eval_npz is not None]
    if not with_eval:
        log.warning("Keras reference rows skipped: no export/eval.npz to measure them on")
        return []
    from edgepack.spec import ModelSpec

    models = [{"name": t.name, "path": str(t.file), "model_spec": t.model_spec} for t in with_eval]
    by_name = {t.name: t for t in with_eval}
    x, _ = _eval_set(with_eval[0])
    light = settings.keras_light  # the demo: a reference line, not a benchmark of Keras (and no cold start:
    # a fresh TensorFlow process costs 10-30 s on 2 cores, a sixth of the demo, for a figure nobody ships)
    colds = {} if light else {
        t.name: cold_start(t.file, "keras", settings.threads[0],
                           ModelSpec.from_dict(t.model_spec).preprocess_pixels(x[:1]) if t.model_spec else x[:1])
        for t in with_eval}  # fmt: skip
    none = {"cold_start_ms": None, "cold_start_process_ms": None, "peak_rss_mb": None}
    rows = []
    for threads in settings.threads[:1] if light else settings.threads:
        progress(f"Keras reference rows, threads={threads} ({len(models)} models{', light' if light else ''})")
        batch = settings.batch[:1] if light else settings.batch
        min_time, windows = (min(settings.min_time, 0.2), 1) if light else (settings.min_time, settings.windows)
        for k in keras_rows(models, with_eval[0].eval_npz, threads, batch, min_time, windows):
            t = by_name[k["artifact"]]
            row = _base_row(t, "keras")
            for key in ("macs", "params", "sparsity"):
                row[key] = row[key] if row[key] is not None else k[key]
            timing = k["timing"]
            row.update(threads=k["threads"], batch=k["batch"], call=k["call"],
                       latency_us={s: timing[s] for s in ("p50", "p90", "p99", "mean", "std", "min", "max", "n")},
                       throughput_per_s=k["throughput_per_s"], windows=timing["windows"],
                       warmup_calls=timing["warmup_calls"], window_p50_us=timing["window_p50"],
                       accuracy=k["accuracy"], n_eval=k["n_eval"], **colds.get(t.name, none))  # fmt: skip
            rows.append(row)
    return rows


def _fill_macs(rows: list[dict[str, Any]], targets: list[Target]) -> None:
    """MACs from the file itself, else from a sibling export of the same source (an .onnx without the onnx
    package), else from the Keras row of the source model."""
    from edgepack.bench.stats import file_macs

    by_file: dict[str, int | None] = {}
    for t in targets:
        if t.format != "keras":
            by_file[str(t.file)] = t.metrics.get("macs") or file_macs(t.file, t.format)
    by_source: dict[str, int] = {}
    for r in rows:
        macs = r["macs"] or by_file.get(r["path"])
        if macs:
            by_source.setdefault(r["source"] or r["artifact"], macs)
            if r["format"] == "keras":
                by_source[r["artifact"]] = macs
        r["macs"] = macs
    for r in rows:
        if not r["macs"]:
            r["macs"] = by_source.get(r["source"] or "") or by_source.get(r["artifact"])


def _fill_intervals(rows: list[dict[str, Any]]) -> None:
    """The 95% Wilson interval of each row's accuracy (``accuracy_ci95``: [low, high])."""
    from edgepack.bench.stats import wilson_interval

    for r in rows:
        ok = r.get("accuracy") is not None and r.get("n_eval")
        r["accuracy_ci95"] = [round(v, 5) for v in wilson_interval(r["accuracy"], r["n_eval"])] if ok else None


def _fill_floor(rows: list[dict[str, Any]], floor: dict[str, Any]) -> None:
    from edgepack.bench.floor import floor_us

    for r in rows:
        f = floor_us(r["macs"], r["precision"], r["batch"], r["threads"], floor)
        p50 = r["latency_us"]["p50"]
        r["floor_us"] = f
        r["floor_ratio"] = p50 / f if f else None  # measured p50 / floor: 1.0 = at the floor
        r["pct_of_floor"] = 100.0 * f / p50 if f else None  # the floor as a percentage of the measured p50


def _beaten(rows: list[dict[str, Any]]) -> list[str]:
    """Rows whose fastest call beat their floor: the floor was measured low, or the file does fewer MACs than counted."""
    return [f"{r['artifact']} {r['runtime']} t{r['threads']} b{r['batch']}" for r in rows
            if r.get("floor_us") and r["latency_us"]["min"] <= r["floor_us"]]  # fmt: skip


def run_bench(inputs: list[str], settings: BenchSettings, runtimes: tuple[str, ...], progress: Any = None,
              floor: dict[str, Any] | None = None) -> dict[str, Any]:  # fmt: skip
    """Benchmark every target of ``inputs`` (run directories or model files); returns the results.json dict."""
    from edgepack.bench.floor import measure_floor

    say = progress or (lambda msg: log.info("%s", msg))
    targets = collect_targets(inputs)
    lean = [t for t in targets if t.format != "keras"]
    keras = [t for t in targets if t.format == "keras"]
    skipped = [t.name for t in lean if not set(FORMAT_RUNTIMES[t.format]) & set(runtimes)]
    if skipped:
        log.info("not in --runtimes %s: %s", ",".join(runtimes), ", ".join(skipped))
    started = _dt.datetime.now(_dt.timezone.utc)
    state_start = machine_state(sample=1.0)
    say("measuring the compute floor (fp32 and int8 GEMM on one core)")
    if floor is None:  # under qemu a 1024^3 GEMM takes minutes and its rate means nothing: one small size
        floor = measure_floor(sizes=(256,), windows=1) if machine_info().get("emulated") else measure_floor()
    say("floor: " + ", ".join(f"{k} {floor[f'{k}_macs_per_s'] / 1e9:.1f} GMAC/s" if floor.get(f"{k}_macs_per_s")
                              else f"{k} not measured" for k in ("fp32", "int8")))  # fmt: skip
    rows: list[dict[str, Any]] = []
    for t in lean:
        x, y = _eval_set(t)
        for runtime in FORMAT_RUNTIMES[t.format]:
            if runtime in runtimes:
                rows.extend(_bench_lean(t, runtime, settings, x, y, say))
    if keras and "keras" in runtimes:
        rows.extend(_bench_keras(keras, settings, say))
    _fill_macs(rows, targets)
    _fill_floor(rows, floor)
    beaten = _beaten(rows)
    if beaten:
        say(f"{len(beaten)} rows ran faster than the floor: measuring the floor again")
        from edgepack.bench.floor import remeasure_floor

        floor = remeasure_floor(floor, beaten)
        _fill_floor(rows, floor)
        beaten = _beaten(rows)
    _fill_intervals(rows)
    machine = {**machine_info(settings.label), "state_start": state_start, "state_end": machine_state(sample=1.0)}
    from edgepack.bench.floor import measurement_warnings

    return {
        "edgepack_version": __version__,
        "created": started.isoformat(timespec="seconds"),
        "seconds": round((_dt.datetime.now(_dt.timezone.utc) - started).total_seconds(), 1),
        "machine": machine,
        "warnings": measurement_warnings(machine, floor) + [
            f"FLOOR BEATEN: {name} ran faster than its floor, measured twice: × floor figures are too low" for name in
            beaten],
        "settings": {"runtimes": list(runtimes), "threads": list(settings.threads), "batch": list(settings.batch),
                     "min_time_s": settings.min_time, "windows": settings.windows, "inputs": [str(i) for i in inputs]},
        "floor": floor,
        "results": rows,
    }  # fmt: skip
