"""`edgepack report`: results.json files -> a Markdown page and a self-contained HTML page with plots.

One results.json gives one machine's report; several (from different machines) give one comparison with a column
per machine. The page is built once as a list of blocks (headings, paragraphs, tables, plots) and rendered to
Markdown or HTML, so both always say the same thing. Plots are matplotlib PNGs embedded as base64 data URIs: the
HTML file needs nothing beside it.
"""

from __future__ import annotations

import base64
import html
import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgepack.errors import ConfigError

Block = tuple  # ("h1"|"h2"|"p", text) | ("table", headers, rows) | ("img", title, png_bytes)


# -- loading ---------------------------------------------------------------------------------------------------


def load_results(inputs: list[str]) -> list[dict[str, Any]]:
    """results.json dicts from files or run directories (DIR/bench/results.json)."""
    out = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            p = p / "bench" / "results.json"
        if not p.is_file():
            raise ConfigError(f"{item}: no results.json there; run `edgepack bench` first or give a results.json file")
        try:
            data = json.loads(p.read_text(encoding="utf-8"))
        except RecursionError:
            raise ConfigError(f"{p}: not valid JSON (nested too deeply to read)") from None
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ConfigError(f"{p}: not valid JSON ({e})") from None
        except OSError as e:
            raise ConfigError(f"{p}: cannot read it ({e.strerror or e})") from None
        if not isinstance(data, dict) or "results" not in data or "machine" not in data:
            raise ConfigError(f"{p}: not an edgepack results.json (expected keys machine and results)")
        _check_results(data, p)
        out.append(data)
    return out


ROW_FIELDS = {"artifact": str, "format": str, "precision": str, "runtime": str, "threads": int, "batch": int,
              "latency_us": dict}  # fmt: skip


def _check_results(data: dict[str, Any], p: Path) -> None:
    """Every field the report reads has its type: a damaged results.json is one line, not a traceback."""
    if not isinstance(data["machine"], dict):
        raise ConfigError(f"{p}: 'machine' is a {type(data['machine']).__name__}; expected an object")
    rows = data["results"]
    if not isinstance(rows, list):
        raise ConfigError(f"{p}: 'results' is a {type(rows).__name__}; expected a list of rows")
    for i, r in enumerate(rows):
        if not isinstance(r, dict):
            raise ConfigError(f"{p}: results[{i}] is a {type(r).__name__}; expected an object")
        for key, kind in ROW_FIELDS.items():
            if not isinstance(r.get(key), kind) or isinstance(r.get(key), bool):
                raise ConfigError(f"{p}: results[{i}] field {key!r} is {r.get(key)!r}; expected {kind.__name__}")
        for q in ("p50", "p90", "p99"):
            v = r["latency_us"].get(q)
            if isinstance(v, bool) or not isinstance(v, int | float):
                raise ConfigError(f"{p}: results[{i}] latency_us.{q} is {v!r}; expected microseconds")
        for key in ("accuracy", "floor_us", "size_bytes", "gzip_bytes", "macs", "params", "sparsity"):
            v = r.get(key)
            if v is not None and (isinstance(v, bool) or not isinstance(v, int | float)):
                raise ConfigError(f"{p}: results[{i}] field {key!r} is {v!r}; expected a number or null")
        if r.get("parity") is not None and not isinstance(r["parity"], dict):
            raise ConfigError(f"{p}: results[{i}] field 'parity' must be an object or null")


def machine_names(results: list[dict[str, Any]]) -> list[str]:
    """A unique column name per results.json: the machine label, numbered when two share one."""
    names: list[str] = []
    for r in results:
        base = str(r["machine"].get("label") or r["machine"].get("cpu_model") or "machine")
        name, i = base, 2
        while name in names:
            name, i = f"{base} ({i})", i + 1
        names.append(name)
    return names


# -- the verdicts ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Recommendation:
    row: dict[str, Any] | None
    reference_accuracy: float | None
    max_drop_points: float
    batch: int
    threads: int
    reference: dict[str, Any] | None = None  # the budget reference: the uncompressed float model's row
    smallest: dict[str, Any] | None = None  # the fewest gzip bytes within budget
    fastest: dict[str, Any] | None = None  # the fastest shippable file, within budget or not
    fp32: dict[str, Any] | None = None  # the reference's fp32 export in the recommended file's runtime
    threads_to_use: int | None = None
    why: str = ""


def _p50(row: dict[str, Any]) -> float:
    return float(row["latency_us"]["p50"])


def headline_rows(rows: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], int, int]:
    """The rows at the smallest batch and thread count (batch 1, 1 thread in the default matrix)."""
    if not rows:
        return [], 1, 1
    batch = min(r["batch"] for r in rows)
    threads = min(r["threads"] for r in rows)
    return [r for r in rows if r["batch"] == batch and r["threads"] == threads], batch, threads


def budget_reference(rows: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The one budget reference: the uncompressed float model (the Keras ``baseline``), else its fp32 export
    (the parity gate holds it to the Keras outputs), else the most accurate fp32 file of the rows."""
    with_acc = [r for r in rows if r.get("accuracy") is not None]
    for pick in (
        lambda r: r["format"] == "keras" and r["artifact"] == "baseline",
        lambda r: r["precision"] == "fp32" and r.get("source") == "baseline" and r["format"] == "tflite",
        lambda r: r["precision"] == "fp32" and r.get("source") == "baseline",
    ):
        found = [r for r in with_acc if pick(r)]
        if found:
            return found[0]
    fp32 = [r for r in with_acc if r["precision"] == "fp32"]
    return max(fp32, key=lambda r: r["accuracy"], default=None)


def shippable(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Exported files a device can run (Keras rows are references only) that did not fail the parity gate."""
    return [r for r in rows if r["format"] != "keras" and (r.get("parity") or {}).get("passed") is not False]


def threads_to_use(rows: list[dict[str, Any]], row: dict[str, Any], tolerance: float = 0.05) -> int:
    """The fewest threads whose batch-``row["batch"]`` p50 is within ``tolerance`` of the best for that file."""
    same = [r for r in rows if r["artifact"] == row["artifact"] and r["runtime"] == row["runtime"]
            and r["batch"] == row["batch"]]  # fmt: skip
    best = min(map(_p50, same))
    return min(r["threads"] for r in same if _p50(r) <= best * (1 + tolerance))


def recommend(rows: list[dict[str, Any]], max_drop: float = 1.0, objective: str = "latency") -> Recommendation:
    """The fastest shippable file within budget: its accuracy within ``max_drop`` points of the uncompressed float
    model's (``budget_reference``) by ``stats.within_budget`` (95% Wilson intervals: files whose interval reaches
    the line count as within, so one image does not decide); then latency decides (``objective`` "size": the
    fewest gzip bytes decide, latency breaks ties)."""
    if objective not in ("latency", "size"):
        raise ConfigError(f"recommend: objective {objective!r}; choose from latency, size")
    from edgepack.bench.stats import within_budget

    head, batch, threads = headline_rows(rows)
    ref = budget_reference(head)
    reference = ref["accuracy"] if ref else None
    files = shippable(head)
    ok = [r for r in files if within_budget(r.get("accuracy"), r.get("n_eval"), reference, max_drop)]
    smallest = min(ok, key=lambda r: (r.get("gzip_bytes") or 0, _p50(r)), default=None)
    best = smallest if objective == "size" else min(ok, key=lambda r: (_p50(r), r.get("gzip_bytes") or 0), default=None)
    fastest = min(files, key=_p50, default=None)
    fp32 = None
    if best is not None:
        same_rt = [r for r in files if r["precision"] == "fp32" and r["runtime"] == best["runtime"]]
        fp32 = next((r for r in same_rt if r.get("source") == (ref or {}).get("artifact", "baseline")),
                    same_rt[0] if same_rt else None)  # fmt: skip
    why = ""
    if best is not None:
        faster_out = [r for r in files if _p50(r) < _p50(best)]
        what = "smallest (gzip)" if objective == "size" else "fastest (p50)"
        why = (f"the {what} of {len(ok)} files within {max_drop:g} point of the uncompressed float model's accuracy"
               + (f"; {len(faster_out)} faster file(s) fall outside the budget" if faster_out and objective ==
                  "latency" else ""))  # fmt: skip
    return Recommendation(best, reference, max_drop, batch, threads, ref, smallest, fastest, fp32,
                          threads_to_use(rows, best) if best else None, why)  # fmt: skip


def headline_figures(rows: list[dict[str, Any]], max_drop: float = 1.0) -> dict[str, Any]:
    """The figures issue 6/7 ask for, at batch 1, one thread: best p50 / floor, ORT int8 / fp32 p50, the Keras
    ``model(x)`` call / the recommended file, and the gzip size of the smallest file within 0.5 point of the
    baseline against the gzipped fp32 .tflite."""
    head, _, _ = headline_rows(rows)
    rec = recommend(rows, max_drop)
    out: dict[str, Any] = {"recommended": rec.row["artifact"] if rec.row else None}
    best = rec.row
    if best and best.get("floor_us"):
        out["best_p50_over_floor"] = _p50(best) / best["floor_us"]
    onnx = {p: [r for r in head if r["runtime"] == "onnxruntime" and r["precision"] == p] for p in ("int8", "fp32")}
    if onnx["int8"] and onnx["fp32"]:
        out["ort_int8_p50_over_fp32_p50"] = min(map(_p50, onnx["int8"])) / min(map(_p50, onnx["fp32"]))
    calls = [r for r in head if r["format"] == "keras" and r.get("call") == "model(x)"]
    if best and calls:
        src = [r for r in calls if r["artifact"] == best.get("source")] or calls
        out["keras_model_call_over_best"] = _p50(src[0]) / _p50(best)
    from edgepack.bench.stats import within_budget

    ref_row = budget_reference(head)
    files = [r for r in shippable(head) if r.get("accuracy") is not None and r.get("gzip_bytes")]
    tfl32 = [r for r in files if r["format"] == "tflite" and r["precision"] == "fp32"]
    if tfl32 and files and ref_row is not None:
        ref = next((r for r in tfl32 if r.get("source") == "baseline"), tfl32[0])
        ok = [r for r in files if within_budget(r["accuracy"], r.get("n_eval"), ref_row["accuracy"], 0.5)]
        if ok:
            small = min(ok, key=lambda r: r["gzip_bytes"])
            out["smallest_within_half_point"] = small["artifact"]
            out["smallest_gzip_bytes"] = small["gzip_bytes"]
            out["fp32_tflite_gzip_bytes"] = ref["gzip_bytes"]
            out["fp32_tflite_gzip_over_smallest_gzip"] = ref["gzip_bytes"] / small["gzip_bytes"]
    return out


def _figures_text(f: dict[str, Any]) -> str:
    parts = []
    if "best_p50_over_floor" in f:
        parts.append(f"recommended file p50 = {f['best_p50_over_floor']:.2f}× the compute floor")
    if "ort_int8_p50_over_fp32_p50" in f:
        parts.append(f"ORT int8 p50 = {f['ort_int8_p50_over_fp32_p50']:.2f}× ORT fp32 p50")
    if "keras_model_call_over_best" in f:
        parts.append(f"Keras model(x) is {f['keras_model_call_over_best']:.0f}× slower than the recommended file")
    if "fp32_tflite_gzip_over_smallest_gzip" in f:
        sizes = (f" ({f['smallest_gzip_bytes']:,} vs {f['fp32_tflite_gzip_bytes']:,} bytes)"
                 if "smallest_gzip_bytes" in f else "")  # fmt: skip
        parts.append(f"{f['smallest_within_half_point']} (smallest within 0.5 point of the baseline) is "
                     f"{f['fp32_tflite_gzip_over_smallest_gzip']:.1f}× smaller gzipped than the fp32 .tflite"
                     f"{sizes}")  # fmt: skip
    return "Headline figures (batch 1, 1 thread): " + ("; ".join(parts) if parts else "not enough rows") + "."


def pareto_front(points: list[tuple[float, float]]) -> list[int]:
    """Indices of (latency, accuracy) points no other point beats on both (lower latency, higher accuracy)."""
    front = []
    for i, (lat, acc) in enumerate(points):
        dominated = any(
            (lo <= lat and ao >= acc) and (lo < lat or ao > acc) for j, (lo, ao) in enumerate(points) if j != i
        )
        if not dominated:
            front.append(i)
    return sorted(front, key=lambda i: points[i][0])


def parity_verdict(rows: list[dict[str, Any]]) -> str:
    exports: dict[str, Any] = {}
    for r in rows:
        if r["format"] != "keras":
            exports[r["artifact"]] = r.get("parity")
    if not exports:
        return "no exported files"
    passed = [n for n, p in exports.items() if p and p.get("passed") is True]
    failed = [n for n, p in exports.items() if p and p.get("passed") is False]
    unchecked = [n for n, p in exports.items() if not p or p.get("passed") is None]
    text = f"{len(passed)} of {len(exports)} exported files passed the parity gate"
    if failed:
        text += f"; FAILED: {', '.join(failed)}"
    if unchecked:
        text += f"; not checked: {', '.join(unchecked)}"
    return text


# -- formatting helpers --------------------------------------------------------------------------------------------


def _us(v: float | None) -> str:
    if v is None:
        return "–"
    return f"{v / 1000:.2f} ms" if v >= 10_000 else f"{v:.1f} µs"


def _num(v: Any, fmt: str = "{:.1f}") -> str:
    return "–" if v is None else fmt.format(v)


def _kb(v: Any) -> str:
    return "–" if v is None else f"{v / 1024:.1f} KB"


def _acc(v: Any, note: str | None = None) -> str:
    if v is None and note:  # e.g. "n/a: not a classifier (2 outputs)": the table shows its first word
        return note.split(":")[0]
    return "–" if v is None else f"{100 * v:.2f}%"


def _parity(p: Any) -> str:
    if not p or p.get("passed") is None:
        return "–"
    if p.get("reference"):
        return "reference"
    return "pass" if p["passed"] else "FAIL"


def _label(r: dict[str, Any]) -> str:
    call = r.get("call")
    return f"{r['artifact']} [{call}]" if r["format"] == "keras" and call else r["artifact"]


def _machine_rows(results: list[dict[str, Any]], names: list[str]) -> list[list[str]]:
    keys = [("cpu_model", "CPU"), ("arch", "arch"), ("isa", "ISA"), ("cores", "cores"), ("os", "OS"),
            ("python", "Python"), ("emulated", "emulated")]  # fmt: skip
    rows = []
    for key, title in keys:
        vals = [r["machine"].get(key) for r in results]
        rows.append([title] + [", ".join(v) if isinstance(v, list) else str(v) for v in vals])
    libs = sorted({k for r in results for k in r["machine"].get("libraries", {})})
    for lib in libs:
        rows.append([lib] + [r["machine"].get("libraries", {}).get(lib, "–") for r in results])
    floor_fp32 = [_num(((r.get("floor") or {}).get("fp32_macs_per_s") or 0) / 1e9, "{:.1f} GMAC/s") for r in results]
    floor_int8 = [_num(((r.get("floor") or {}).get("int8_macs_per_s") or 0) / 1e9, "{:.1f} GMAC/s") for r in results]
    rows.append(["floor fp32 (1 core)"] + floor_fp32)
    rows.append(["floor int8 (1 core)"] + floor_int8)
    return rows


def _precision(r: dict[str, Any]) -> str:
    """The precision as the report shows it: int8 files with float layers say "int8 mixed (N float)"."""
    if r.get("mixed"):
        return f"{r['precision']} mixed ({len(r.get('float_layers') or [])} float)"
    return str(r["precision"])


def _acc_ci(r: dict[str, Any] | None) -> str:
    if not r or r.get("accuracy") is None:
        return _acc(None, (r or {}).get("accuracy_note"))  # "n/a" for a non-classifier
    ci = r.get("accuracy_ci95")
    if not ci and r.get("n_eval"):  # results written before intervals were recorded
        from edgepack.bench.stats import wilson_interval

        ci = wilson_interval(r["accuracy"], r["n_eval"])
    return _acc(r["accuracy"]) + (f" [{100 * ci[0]:.1f}–{100 * ci[1]:.1f}]" if ci else "")


def recommend_text(rec: Recommendation) -> str:
    budget = (f"within {rec.max_drop_points:g} point of the uncompressed float model's accuracy "
              f"{_acc(rec.reference_accuracy)}")  # fmt: skip
    if rec.row is None:
        return f"Recommended file: none — no deployable file is {budget}."
    r = rec.row
    return (f"Recommended file: **{r['artifact']}** ({r['format']} {_precision(r)}, {r['runtime']}) — "
            f"p50 {_us(_p50(r))} at batch {rec.batch}, {rec.threads} thread{'s' if rec.threads > 1 else ''}; "
            + (f"accuracy {r['accuracy_note']} (the fastest file); " if r.get("accuracy_note") and r.get("accuracy") is None
               else f"accuracy {_acc_ci(r)} ({budget}); ")
            + f"{_kb(r.get('gzip_bytes'))} gzipped; "
            f"{_num(r.get('floor_ratio'), '{:.2f}')}× the compute floor")  # fmt: skip


def _file(r: dict[str, Any]) -> str:
    """The row's model file (results from older versions carry only the artifact name)."""
    return str(r.get("path") or r["artifact"])


def _bundle(r: dict[str, Any]) -> str | None:
    """The bundle beside the row's file: where it exists here, or where the row came with one (an export's parity
    verdict is in its bundle; results.json read on another machine has paths that do not exist here)."""
    if r.get("format") == "keras" or not r.get("path"):
        return None
    b = Path(r["path"]).with_suffix(".json")
    return str(b) if b.is_file() or r.get("parity") is not None else None


def decision_card(res: dict[str, Any], max_drop: float, objective: str = "latency") -> list[Block]:
    """The report's first screen: which file, why, what it costs, beside the smallest, the fastest and the fp32
    reference; the thread count to use and the files to copy to the device; the measurement warnings."""
    rows = res["results"]
    rec = recommend(rows, max_drop, objective)
    out: list[Block] = [("warn", w) for w in res.get("warnings", [])]
    if rec.row is None:
        return [*out, ("card", "No file within budget", [("verdict", recommend_text(rec).replace("**", ""))])]
    r = rec.row

    def line(x: dict[str, Any] | None) -> str:
        if x is None:
            return "–"
        return (f"{x['artifact']} ({x['runtime']}, {_precision(x)}): p50 {_us(_p50(x))}, {_acc_ci(x)}, "
                f"{_kb(x.get('gzip_bytes'))} gzip")  # fmt: skip

    files = [_file(r)] + ([_bundle(r)] if _bundle(r) else [])
    n_eval = r.get("n_eval")
    note = r.get("accuracy_note") if r.get("accuracy") is None else None  # a non-classifier: no accuracy to weigh
    mixed = (f"; mixed: {len(r.get('float_layers') or [])} layer(s) left float by the latency plan "
             f"({', '.join(r.get('float_layers') or [])})" if r.get("mixed") else "")  # fmt: skip
    lines = [
        ("recommended", f"**{r['artifact']}** — {r['format']} {_precision(r)} on {r['runtime']}{mixed}"),
        ("why", f"the fastest (p50) file; accuracy {note}" if note else rec.why),
        ("what it costs", f"p50 {_us(_p50(r))} (batch {rec.batch}, {rec.threads} thread), "
                          f"{_num(r.get('floor_ratio'), '{:.2f}')}× the compute floor; "
                          + (f"accuracy {note}; " if note else
                             f"accuracy {_acc_ci(r)} (95% Wilson interval{f' on {n_eval} images' if n_eval else ''}) "
                             f"vs the reference {_acc_ci(rec.reference)}; ")
                          + f"{_kb(r.get('gzip_bytes'))} gzipped ({_kb(r.get('size_bytes'))} on disk)"),
        ("threads to use", f"{rec.threads_to_use} (the fewest within 5% of this file's best p50 at batch {rec.batch})"),
        ("copy these files to the device", " + ".join(f"`{f}`" for f in files)
         + (f" — then `pip install edgepack` and `edgepack.runtime.load('{Path(files[0]).name}').run(images)` "
            "(named outputs)" if note else
            f" — then `pip install edgepack` and `edgepack predict {Path(files[-1]).name} IMAGE`")),
        ("smallest within budget", line(rec.smallest)),
        ("fastest (any accuracy)", line(rec.fastest)),
        ("fp32 reference", line(rec.fp32)),
        ("budget", f"{max_drop:g} point below the uncompressed float model "
                   f"({(rec.reference or {}).get('artifact', '–')}, {_acc_ci(rec.reference)}); a file counts as "
                   "within when its 95% interval reaches that line"),
    ]  # fmt: skip
    return [*out, ("card", "Which file to ship", lines)]


def _single(res: dict[str, Any], name: str, max_drop: float, objective: str = "latency") -> list[Block]:
    rows = res["results"]
    head, batch, threads = headline_rows(rows)
    blocks: list[Block] = [
        ("p", f"Machine: **{name}** — {res['machine'].get('cpu_model')} ({res['machine'].get('arch')}, "
              f"{res['machine'].get('cores')} cores){' — EMULATED: not real speed' if res['machine'].get('emulated') else ''}"),
        *decision_card(res, max_drop, objective),
    ]  # fmt: skip
    details: list[Block] = [
        ("p", "Parity: " + parity_verdict(rows)),
        ("p", _figures_text(headline_figures(rows, max_drop))),
    ]
    headers = ["file", "runtime", "precision", "accuracy [95% CI]", "p50", "p90", "p99", "×floor", "cold start",
               "peak RSS", "size", "gzip", "sparsity", "parity"]  # fmt: skip
    table = [[_label(r), r["runtime"], _precision(r), _acc_ci(r), _us(r["latency_us"]["p50"]),
              _us(r["latency_us"]["p90"]), _us(r["latency_us"]["p99"]), _num(r.get("floor_ratio"), "{:.2f}"),
              _num(r.get("cold_start_ms"), "{:.0f} ms"), _num(r.get("peak_rss_mb"), "{:.0f} MB"),
              _kb(r.get("size_bytes")), _kb(r.get("gzip_bytes")), _num(r.get("sparsity"), "{:.2f}"),
              _parity(r.get("parity"))] for r in sorted(head, key=_p50)]  # fmt: skip
    details.append(("table", headers, table))
    blocks.append(("details", f"Headline table: batch {batch}, {threads} thread{'s' if threads > 1 else ''} "
                              f"({len(head)} rows)", details))  # fmt: skip
    headers = ["file", "runtime", "threads", "batch", "p50", "p90", "p99", "mean ± std", "min", "max", "n",
               "throughput", "floor", "×floor", "engine call p50"]  # fmt: skip
    table = [[_label(r), r["runtime"], str(r["threads"]), str(r["batch"]), _us(r["latency_us"]["p50"]),
              _us(r["latency_us"]["p90"]), _us(r["latency_us"]["p99"]),
              f"{_us(r['latency_us']['mean'])} ± {_us(r['latency_us']['std'])}", _us(r["latency_us"]["min"]),
              _us(r["latency_us"]["max"]), str(r["latency_us"]["n"]), _num(r.get("throughput_per_s"), "{:.0f}/s"),
              _us(r.get("floor_us")), _num(r.get("floor_ratio"), "{:.2f}"),
              _us((r.get("engine_latency_us") or {}).get("p50"))] for r in rows]  # fmt: skip
    blocks.append(("details", f"Every row ({len(rows)})", [("table", headers, table)]))
    return blocks


# -- the page --------------------------------------------------------------------------------------------------

NOTES = ("Latency: end-to-end `predict()` from uint8 pixels, what a device program pays (preprocessing, engine "
         "call, output head); median of MLPerf-style windows (each at least min_time seconds) after warm-up. The "
         "engine call alone is `engine_latency_us` in results.json (the 'engine call p50' column), timed in "
         "interleaved windows. floor_us = multiply-adds ÷ the best one-core GEMM rate measured in the same run "
         "(int8 rate for int8/dynamic files) ÷ threads; ×floor = p50 ÷ floor_us. Accuracy: on export/eval.npz, "
         "with its 95% Wilson interval. Cold start: a fresh process importing the runtime, loading the file and "
         "running one inference; RSS is that process's peak.")  # fmt: skip


def build_blocks(results: list[dict[str, Any]], max_drop: float = 1.0, plots: bool = True,
                 objective: str = "latency") -> list[Block]:  # fmt: skip
    """The page: the decision card and the two deciding plots first, every table below in collapsible sections."""
    names = machine_names(results)
    blocks: list[Block] = [("h1", "edgepack benchmark report")]
    if len(results) == 1:
        blocks += _single(results[0], names[0], max_drop, objective)
    else:
        blocks += _comparison(results, names, max_drop)
    if plots:
        rec = recommend(results[0]["results"], max_drop, objective)
        plotted = make_plots(results, names, max_drop, rec)
        # the two plots that decide come right after the card; the thread plot goes with the tables
        first = [("img", t, png) for t, png in plotted[:2]]
        at = next((i for i, b in enumerate(blocks) if b[0] == "details"), len(blocks))
        blocks[at:at] = first
        blocks.append(("details", "Latency per thread count", [("img", t, png) for t, png in plotted[2:]]))
    blocks.append(("details", "Machines", [("table", ["", *names], _machine_rows(results, names))]))
    blocks.append(("p", NOTES))
    return blocks


def _key(r: dict[str, Any]) -> tuple:
    return (r["artifact"], r["runtime"], r.get("call") or "", r["threads"], r["batch"])


def _comparison(results: list[dict[str, Any]], names: list[str], max_drop: float) -> list[Block]:
    blocks: list[Block] = [("p", f"Comparison of {len(results)} machines: " + ", ".join(names))]
    for name, res in zip(names, results, strict=True):
        rec = recommend(res["results"], max_drop)
        emulated = " (EMULATED: not real speed)" if res["machine"].get("emulated") else ""
        blocks.append(("p", f"{name}{emulated}: " + recommend_text(rec)))
        blocks.append(("p", f"{name}: parity: " + parity_verdict(res["results"])))
    index: dict[tuple, dict[str, dict[str, Any]]] = {}
    for name, res in zip(names, results, strict=True):
        for r in res["results"]:
            index.setdefault(_key(r), {})[name] = r
    blocks.append(("h2", "p50 latency per machine"))
    headers = ["file", "runtime", "threads", "batch", *[f"p50 {n}" for n in names], *[f"×floor {n}" for n in names],
               *[f"accuracy {n}" for n in names]]  # fmt: skip
    table = []
    for key in sorted(index, key=lambda k: (k[3], k[4], k[0], k[1], k[2])):
        per = index[key]
        first = next(iter(per.values()))
        table.append([_label(first), key[1], str(key[3]), str(key[4]),
                      *[_us(per[n]["latency_us"]["p50"]) if n in per else "–" for n in names],
                      *[_num(per[n].get("floor_ratio"), "{:.2f}") if n in per else "–" for n in names],
                      *[_acc(per[n].get("accuracy"), per[n].get("accuracy_note")) if n in per else "–" for n in names]])  # fmt: skip
    blocks.append(("table", headers, table))
    return blocks


# -- plots ---------------------------------------------------------------------------------------------------------


def _plt() -> Any:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as e:
        raise ConfigError("plots need matplotlib: install edgepack[report] (or run without --html)") from e
    return plt


def _png(fig: Any, layout: bool = True) -> bytes:
    plt = _plt()
    buf = io.BytesIO()
    if layout:
        fig.tight_layout()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return buf.getvalue()


def place_labels(ax: Any, points: list[tuple[float, float]], labels: list[str], fontsize: float = 7) -> list[Any]:
    """Label each point where the label's box overlaps no other label and no marker and stays inside the axes:
    offsets tried at growing distances around the point, then anywhere free in the axes (with a leader line).
    Call it after the figure's layout is final (positions are display coordinates)."""
    fig = ax.figure
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    frame = ax.get_window_extent(renderer)
    to_data = ax.transData.inverted()
    taken = [_Box(px - 5, py - 5, px + 5, py + 5) for px, py in (ax.transData.transform(p) for p in points)]
    scale = fig.dpi / 72.0
    near = [(dx * r, dy * r) for r in (6, 14, 26, 40, 58, 80) for dx, dy in
            ((1, 0.3), (1, -1), (-1, 0.3), (-1, -1), (0, 1.3), (0, -1.6), (1, 1.3), (-1, 1.3))]  # fmt: skip
    anywhere = [(frame.x0 + 4 + c * (frame.width - 8) / 3, frame.y1 - 12 - 11 * r) for r in range(60) for c in range(3)
                if frame.y1 - 12 - 11 * r > frame.y0 + 4]  # fmt: skip
    texts = []
    for (x, y), label in zip(points, labels, strict=True):
        px, py = ax.transData.transform((x, y))
        spots = [(px + dx * scale, py + dy * scale, "left" if dx >= 0 else "right") for dx, dy in near]
        spots += [(sx, sy, "left") for sx, sy in anywhere]
        for k, (sx, sy, ha) in enumerate(spots):
            t = ax.text(*to_data.transform((sx, sy)), label, fontsize=fontsize, ha=ha, va="center", zorder=6)
            e = t.get_window_extent(renderer)
            box = _Box(e.x0 - 1, e.y0 - 1, e.x1 + 1, e.y1 + 1)
            inside = frame.x0 <= box.x0 and box.x1 <= frame.x1 and frame.y0 <= box.y0 and box.y1 <= frame.y1
            if inside and not any(box.overlaps(o) for o in taken):
                taken.append(box)
                if k >= 8 or abs(sx - px) + abs(sy - py) > 20:  # far from its point: draw the leader line
                    end = (box.x0 if ha == "left" else box.x1, (box.y0 + box.y1) / 2)
                    ax.plot(*zip((x, y), to_data.transform(end), strict=True), color="0.65", lw=0.5, zorder=1)
                texts.append(t)
                break
            t.remove()
        else:  # the axes are full: the label goes in the list under the plot, never on top of another
            texts.append(ax.text(0.0, -0.16 - 0.05 * len(texts), label, transform=ax.transAxes, fontsize=fontsize))
    return texts


@dataclass(frozen=True)
class _Box:
    x0: float
    y0: float
    x1: float
    y1: float

    def overlaps(self, o: _Box) -> bool:
        return self.x0 < o.x1 and o.x0 < self.x1 and self.y0 < o.y1 and o.y0 < self.y1


_RT_COLOR = {"onnxruntime": "C0", "litert": "C1", "keras": "C2"}


def pareto_plot(
    results: list[dict[str, Any]], names: list[str], rec: Recommendation | None = None
) -> tuple[str, bytes]:
    """Accuracy (with 95% intervals) vs p50 of the shippable files at batch 1, one thread, the Pareto front and the
    recommended file marked; the uncompressed float model's accuracy and the budget line as reference lines."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(9, 5.2))
    markers = "osD^v<>"
    all_pts: list[tuple[float, float]] = []
    all_labels: list[str] = []
    for m, (name, res) in enumerate(zip(names, results, strict=True)):
        head, batch, threads = headline_rows([r for r in res["results"] if r.get("accuracy") is not None])
        files = shippable(head)
        pts = [(_p50(r), 100 * r["accuracy"]) for r in files]
        for r, (lat, acc) in zip(files, pts, strict=True):
            ci = r.get("accuracy_ci95")
            if ci:
                ax.errorbar(lat, acc, yerr=[[acc - 100 * ci[0]], [100 * ci[1] - acc]], color="0.75", lw=0.8,
                            capsize=2, zorder=1)  # fmt: skip
            ax.scatter(lat, acc, marker=markers[m % len(markers)], color=_RT_COLOR.get(r["runtime"], "C3"), s=36,
                       zorder=3)  # fmt: skip
        front = pareto_front(pts)
        if front:
            ax.plot([pts[i][0] for i in front], [pts[i][1] for i in front], "-", color="C3", lw=1.2, zorder=2,
                    label=f"Pareto front ({name})")  # fmt: skip
        all_pts += pts
        all_labels += [r["artifact"] + (" (mixed)" if r.get("mixed") else "") for r in files]
        if m == 0 and rec is not None:
            if rec.reference_accuracy is not None:
                ref = 100 * rec.reference_accuracy
                ax.axhline(ref, color="C2", lw=1, ls="--", label=f"uncompressed float model {ref:.2f}%")
                ax.axhline(ref - rec.max_drop_points, color="C3", lw=1, ls=":",
                           label=f"budget: {rec.max_drop_points:g} point below")  # fmt: skip
            if rec.row is not None:
                ax.scatter(_p50(rec.row), 100 * rec.row["accuracy"], s=260, marker="*", facecolors="gold",
                           edgecolors="k", linewidths=0.8, zorder=5, label=f"recommended: {rec.row['artifact']}")  # fmt: skip
        keras = [r for r in head if r["format"] == "keras" and r.get("call") == "model(x)"]
        if m == 0 and keras:
            k = min(keras, key=_p50)
            ax.text(0.99, 0.02, f"Keras model(x), for reference: {_us(_p50(k))} ({k['artifact']})",
                    transform=ax.transAxes, ha="right", va="bottom", fontsize=7, color="C2")  # fmt: skip
    for rt in ("onnxruntime", "litert"):
        ax.scatter([], [], color=_RT_COLOR[rt], label=rt)
    ax.set_xscale("log")
    ax.set_xlabel("p50 latency (µs, log scale), batch 1, 1 thread")
    ax.set_ylabel("accuracy on eval.npz (%), 95% interval")
    ax.set_title("Accuracy vs latency of the shippable files")
    ax.grid(True, which="both", alpha=0.3)
    if all_pts:
        xs, ys = [p[0] for p in all_pts], [p[1] for p in all_pts]
        ax.set_xlim(min(xs) / 1.6, max(xs) * 2.2)
        lo = min(ys + ([100 * rec.reference_accuracy - rec.max_drop_points] if rec and rec.reference_accuracy else []))
        ax.set_ylim(lo - 1.0, max(ys) + 0.8)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    fig.tight_layout()  # before the labels: they are placed in the final axes, and nothing moves them after
    place_labels(ax, all_pts, all_labels)
    return "Accuracy vs latency (shippable files; Pareto front, recommended file starred)", _png(fig, layout=False)


def size_plot(results: list[dict[str, Any]], rec: Recommendation | None = None) -> tuple[str, bytes]:
    """gzip and on-disk size of the shippable files (first machine: sizes do not depend on it), smallest at the
    top, the recommended file marked."""
    plt = _plt()
    files: dict[str, dict[str, Any]] = {}
    for r in shippable(results[0]["results"]):
        files.setdefault(r["artifact"], r)
    labels = sorted(files, key=lambda n: (files[n].get("gzip_bytes") or 0, n), reverse=True)
    fig, ax = plt.subplots(figsize=(8, 0.36 * len(labels) + 1.4))
    ys = list(range(len(labels)))
    chosen = rec.row["artifact"] if rec and rec.row else None
    gz = [(files[n].get("gzip_bytes") or 0) / 1024 for n in labels]
    ax.barh([y + 0.2 for y in ys], [(files[n].get("size_bytes") or 0) / 1024 for n in labels], 0.4, label="on disk",
            color="0.75")  # fmt: skip
    ax.barh([y - 0.2 for y in ys], gz, 0.4, label="gzip -9",
            color=["gold" if n == chosen else "C0" for n in labels], edgecolor=["k" if n == chosen else "none" for n in labels])  # fmt: skip
    names = [
        f"★ {n} (recommended)" if n == chosen else n + (" (mixed)" if files[n].get("mixed") else "") for n in labels
    ]
    ax.set_yticks(ys, names, fontsize=8)
    for y, v in zip(ys, gz, strict=True):
        ax.text(v, y - 0.2, f" {v:.1f}", va="center", fontsize=7)
    ax.set_xlabel("KB")
    ax.set_title("Size per shippable file (sorted by gzip size)")
    ax.legend(fontsize=8, loc="lower right")
    return "Size per file (sorted, recommended marked)", _png(fig)


def threads_plot(results: list[dict[str, Any]], names: list[str]) -> tuple[str, bytes]:
    """p50 per file and thread count at the smallest batch: one horizontal bar group per file (labels never
    collide), log scale."""
    plt = _plt()
    groups: dict[tuple[str, str], dict[tuple[str, int], float]] = {}
    series: list[tuple[str, int]] = []
    for name, res in zip(names, results, strict=True):
        rows = res["results"]
        if not rows:
            continue
        batch = min(r["batch"] for r in rows)
        for r in rows:
            if r["batch"] != batch:
                continue
            groups.setdefault((_label(r), r["runtime"]), {})[(name, r["threads"])] = _p50(r)
            if (name, r["threads"]) not in series:
                series.append((name, r["threads"]))
    keys = sorted(groups, key=lambda g: min(groups[g].values()))
    fig, ax = plt.subplots(figsize=(9, 0.34 * max(len(keys), 1) * max(len(series), 1) + 1.5))
    height = 0.8 / max(len(series), 1)
    for i, srs in enumerate(series):
        ax.barh([k + i * height for k in range(len(keys))], [groups[g].get(srs, 0) for g in keys], height,
                label=f"{srs[0]}: {srs[1]} thread{'s' if srs[1] > 1 else ''}", color=f"C{i}")  # fmt: skip
    ax.set_yticks([k + 0.4 - height / 2 for k in range(len(keys))], [f"{a} ({rt})" for a, rt in keys], fontsize=7)
    ax.invert_yaxis()
    ax.set_xscale("log")
    ax.set_xlabel("p50 latency (µs, log scale)")
    ax.set_title("Latency per thread count (smallest batch)")
    ax.legend(fontsize=8)
    return "Latency per thread count", _png(fig)


def make_plots(results: list[dict[str, Any]], names: list[str], max_drop: float = 1.0,
               rec: Recommendation | None = None) -> list[tuple[str, bytes]]:  # fmt: skip
    """(title, PNG bytes): accuracy vs latency with the Pareto front, sorted sizes, latency per thread count."""
    rec = rec or recommend(results[0]["results"], max_drop)
    return [pareto_plot(results, names, rec), size_plot(results, rec), threads_plot(results, names)]


# -- rendering -----------------------------------------------------------------------------------------------------


def _md_cell(s: str) -> str:
    return str(s).replace("|", "\\|").replace("\n", " ")


def iter_blocks(blocks: list[Block]) -> list[Block]:
    """Every block, the ones inside collapsible sections included, in page order."""
    out: list[Block] = []
    for b in blocks:
        out.append(b)
        if b[0] == "details":
            out += iter_blocks(b[2])
    return out


def to_markdown(blocks: list[Block], plot_files: dict[str, str] | None = None) -> str:
    """Markdown; plots appear as links to ``plot_files[title]`` when given (else they are left out); collapsible
    sections become <details> (GitHub renders them)."""
    lines: list[str] = []
    for b in blocks:
        if b[0] == "h1":
            lines += [f"# {b[1]}", ""]
        elif b[0] == "h2":
            lines += [f"## {b[1]}", ""]
        elif b[0] == "p":
            lines += [b[1], ""]
        elif b[0] == "warn":
            lines += [f"> **WARNING** — {b[1]}", ""]
        elif b[0] == "card":
            lines += [f"## {b[1]}", ""] + [f"- **{k}**: {v}" for k, v in b[2]] + [""]
        elif b[0] == "details":
            lines += ["<details>", f"<summary>{html.escape(b[1])}</summary>", "",
                      to_markdown(b[2], plot_files).rstrip(), "", "</details>", ""]  # fmt: skip
        elif b[0] == "table":
            headers, rows = b[1], b[2]
            lines.append("| " + " | ".join(_md_cell(h) for h in headers) + " |")
            lines.append("|" + "|".join("---" for _ in headers) + "|")
            lines += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in rows]
            lines.append("")
        elif b[0] == "img" and plot_files and b[1] in plot_files:
            lines += [f"![{b[1]}]({plot_files[b[1]]})", ""]
    return "\n".join(lines).rstrip() + "\n"


def _inline_md(text: str) -> str:
    """HTML for a paragraph: escape, then the two Markdown marks the page uses (**bold**, `code`)."""
    parts = html.escape(text).split("**")
    text = "".join(f"<strong>{p}</strong>" if i % 2 else p for i, p in enumerate(parts))
    parts = text.split("`")
    return "".join(f"<code>{p}</code>" if i % 2 else p for i, p in enumerate(parts))


_CSS = """body{font-family:system-ui,sans-serif;margin:1.2em 2em;color:#222;max-width:1400px}
h1{font-size:22px;margin:.2em 0 .4em}
table{border-collapse:collapse;margin:1em 0;font-size:13px}td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}
td:first-child,th:first-child{text-align:left}th{background:#f0f0f0}img{max-width:100%;border:1px solid #ddd;margin:.5em 0}
figure{margin:1em 0}figcaption{font-size:13px;color:#555}
.card{border:2px solid #2a7;border-radius:8px;background:#f3fbf6;padding:.6em 1em;margin:.6em 0;font-size:14px}
.card h2{margin:.1em 0 .4em;font-size:18px}.card dl{display:grid;grid-template-columns:max-content 1fr;gap:3px 14px;margin:0}
.card dt{font-weight:600;color:#255}.card dd{margin:0}
.warn{border:2px solid #c33;background:#fff1f0;color:#811;padding:.5em 1em;border-radius:6px;margin:.5em 0;font-weight:600}
details{margin:.6em 0}summary{cursor:pointer;font-weight:600;font-size:15px}
.plots{display:flex;flex-wrap:wrap;gap:1em;align-items:flex-start}.plots figure{margin:0;flex:1 1 560px}"""


def _html_blocks(blocks: list[Block]) -> list[str]:
    body: list[str] = []
    i = 0
    while i < len(blocks):
        b = blocks[i]
        if b[0] == "h1":
            body.append(f"<h1>{html.escape(b[1])}</h1>")
        elif b[0] == "h2":
            body.append(f"<h2>{html.escape(b[1])}</h2>")
        elif b[0] == "p":
            body.append(f"<p>{_inline_md(b[1])}</p>")
        elif b[0] == "warn":
            body.append(f'<div class="warn" role="alert">WARNING — {_inline_md(b[1])}</div>')
        elif b[0] == "card":
            items = "".join(f"<dt>{html.escape(k)}</dt><dd>{_inline_md(v)}</dd>" for k, v in b[2])
            body.append(f'<section class="card" id="decision"><h2>{html.escape(b[1])}</h2><dl>{items}</dl></section>')
        elif b[0] == "details":
            body.append(f"<details><summary>{html.escape(b[1])}</summary>" + "\n".join(_html_blocks(b[2]))
                        + "</details>")  # fmt: skip
        elif b[0] == "table":
            head = "".join(f"<th>{html.escape(str(h))}</th>" for h in b[1])
            rows = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in b[2])
            body.append(f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>")
        elif b[0] == "img":  # consecutive plots side by side
            figs = []
            while i < len(blocks) and blocks[i][0] == "img":
                data = base64.b64encode(blocks[i][2]).decode("ascii")
                figs.append(f'<figure><img alt="{html.escape(blocks[i][1])}" src="data:image/png;base64,{data}">'
                            f"<figcaption>{html.escape(blocks[i][1])}</figcaption></figure>")  # fmt: skip
                i += 1
            body.append('<div class="plots">' + "".join(figs) + "</div>")
            continue
        i += 1
    return body


def to_html(blocks: list[Block]) -> str:
    """A self-contained page: tables and base64-embedded PNG plots, no external resources."""
    title = next((b[1] for b in blocks if b[0] == "h1"), "edgepack benchmark report")
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
            f"<style>{_CSS}</style></head><body>\n" + "\n".join(_html_blocks(blocks)) + "\n</body></html>\n")  # fmt: skip


def plot_slug(title: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in title.lower()).strip("-").replace("--", "-") + ".png"


# -- writing ---------------------------------------------------------------------------------------------------


def write_report(
    results: list[dict[str, Any]],
    run_dir: Path | None = None,
    html_page: bool = False,
    out: Path | None = None,
    max_drop: float = 1.0,
    objective: str = "latency",
) -> tuple[str, list[Recommendation]]:
    """Render the report and write it: a run directory keeps report.md, report.html and plots/*.png.

    Returns the Markdown and one recommendation per results.json (``row`` None: nothing within the budget).
    """
    import importlib.util

    from edgepack.files import atomic_write_bytes, atomic_write_text

    if not (isinstance(max_drop, int | float) and 0 <= max_drop <= 100):  # nan fails every comparison
        raise ConfigError(f"--max-accuracy-drop: got {max_drop}; expected points in [0, 100]")
    if html_page and out is None and run_dir is None:
        raise ConfigError("--html with results.json files: give --out FILE.html for the page")
    # Plots need matplotlib (the [report] extra): required for HTML, skipped for Markdown on a lean install.
    plots = bool(html_page or (run_dir and importlib.util.find_spec("matplotlib") is not None))
    blocks = build_blocks(results, max_drop, plots=plots, objective=objective)
    if run_dir is not None and (run_dir / "manifest.json").is_file():  # issue 15: TFLM parity, arena, board fit
        from edgepack.mcu.report import mcu_blocks

        at = next((i for i, b in enumerate(blocks) if b[0] == "details" and b[1] == "Machines"), len(blocks))
        blocks[at:at] = mcu_blocks(json.loads((run_dir / "manifest.json").read_text(encoding="utf-8")))
    if run_dir is not None and (run_dir / "manifest.json").is_file():  # issue 16: sensitivity tables
        from edgepack.export.sensitivity import report_blocks

        blocks += report_blocks(json.loads((run_dir / "manifest.json").read_text()), plots)
    plot_files: dict[str, str] = {}
    if run_dir is not None:  # a run directory keeps its plots as files too: DIR/plots/*.png
        for b in iter_blocks(blocks):
            if b[0] == "img":
                rel = f"plots/{plot_slug(b[1])}"
                atomic_write_bytes(run_dir / rel, b[2])
                plot_files[b[1]] = rel
    md = to_markdown(blocks, plot_files)
    if html_page:
        atomic_write_text(out or run_dir / "report.html", to_html(blocks))  # type: ignore[operator]
        if run_dir is not None:
            atomic_write_text(run_dir / "report.md", md)
    elif out is not None:
        atomic_write_text(out, md)
    elif run_dir is not None:
        atomic_write_text(run_dir / "report.md", md)
    return md, [recommend(r["results"], max_drop, objective) for r in results]
