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
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ConfigError(f"{p}: not valid JSON ({e})") from None
        if not isinstance(data, dict) or "results" not in data or "machine" not in data:
            raise ConfigError(f"{p}: not an edgepack results.json (expected keys machine and results)")
        out.append(data)
    return out


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


def _p50(row: dict[str, Any]) -> float:
    return float(row["latency_us"]["p50"])


def headline_rows(rows: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], int, int]:
    """The rows at the smallest batch and thread count (batch 1, 1 thread in the default matrix)."""
    if not rows:
        return [], 1, 1
    batch = min(r["batch"] for r in rows)
    threads = min(r["threads"] for r in rows)
    return [r for r in rows if r["batch"] == batch and r["threads"] == threads], batch, threads


def recommend(rows: list[dict[str, Any]], max_drop: float = 1.0) -> Recommendation:
    """The fastest deployable file whose accuracy is within ``max_drop`` points of the best float source model
    (the Keras rows when present, else the fp32 exports)."""
    head, batch, threads = headline_rows(rows)
    floats = [r for r in head if r["format"] == "keras" and r.get("accuracy") is not None]
    floats = floats or [r for r in head if r["precision"] == "fp32" and r.get("accuracy") is not None]
    reference = max((r["accuracy"] for r in floats), default=None)
    candidates = [r for r in head if r["format"] != "keras"]
    if reference is not None:
        candidates = [
            r
            for r in candidates
            if r.get("accuracy") is not None and r["accuracy"] >= reference - max_drop / 100 - 1e-12
        ]
    best = min(candidates, key=_p50, default=None)
    return Recommendation(best, reference, max_drop, batch, threads)


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
    floats = [r for r in head if r["format"] == "keras" and r.get("accuracy") is not None]
    base = next((r for r in floats if r["artifact"] == "baseline"), floats[0] if floats else None)
    files = [r for r in head if r["format"] != "keras" and r.get("accuracy") is not None and r.get("gzip_bytes")]
    tfl32 = [r for r in files if r["format"] == "tflite" and r["precision"] == "fp32"]
    if tfl32 and files:
        # without Keras rows (not benchmarked), the baseline's fp32 .tflite stands in for its accuracy: the
        # parity gate holds it to the Keras outputs within 1e-4
        ref = next((r for r in tfl32 if r.get("source") == (base["artifact"] if base else "baseline")), None)
        base_acc = base["accuracy"] if base else (ref or {}).get("accuracy")
        ref = ref or tfl32[0]
        ok = [r for r in files if base_acc is not None and r["accuracy"] >= base_acc - 0.005 - 1e-12]
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


def _acc(v: Any) -> str:
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
    floor_fp32 = [_num((r.get("floor") or {}).get("fp32_macs_per_s", 0) / 1e9, "{:.1f} GMAC/s") for r in results]
    floor_int8 = [_num((r.get("floor") or {}).get("int8_macs_per_s", 0) / 1e9, "{:.1f} GMAC/s") for r in results]
    rows.append(["floor fp32 (1 core)"] + floor_fp32)
    rows.append(["floor int8 (1 core)"] + floor_int8)
    return rows


def recommend_text(rec: Recommendation) -> str:
    budget = f"within {rec.max_drop_points:g} point of the best float source accuracy {_acc(rec.reference_accuracy)}"
    if rec.row is None:
        return f"Recommended file: none — no deployable file is {budget}."
    r = rec.row
    return (f"Recommended file: **{r['artifact']}** ({r['format']} {r['precision']}, {r['runtime']}) — "
            f"p50 {_us(_p50(r))} at batch {rec.batch}, {rec.threads} thread{'s' if rec.threads > 1 else ''}; "
            f"accuracy {_acc(r.get('accuracy'))} ({budget}); {_kb(r.get('gzip_bytes'))} gzipped; "
            f"{_num(r.get('floor_ratio'), '{:.2f}')}× the compute floor")  # fmt: skip


# -- the page --------------------------------------------------------------------------------------------------


def build_blocks(results: list[dict[str, Any]], max_drop: float = 1.0, plots: bool = True) -> list[Block]:
    names = machine_names(results)
    blocks: list[Block] = [("h1", "edgepack benchmark report")]
    if len(results) == 1:
        blocks += _single(results[0], names[0], max_drop)
    else:
        blocks += _comparison(results, names, max_drop)
    blocks.append(("h2", "Machines"))
    blocks.append(("table", ["", *names], _machine_rows(results, names)))
    if plots:
        blocks.append(("h2", "Plots"))
        for title, png in make_plots(results, names, max_drop):
            blocks.append(("img", title, png))
    notes = ("Latency: median of MLPerf-style windows (each at least min_time seconds) of the engine call alone, "
             "after warm-up. floor_us = multiply-adds ÷ the best one-core GEMM rate measured in the same run "
             "(int8 rate for int8/dynamic files) ÷ threads; ×floor = p50 ÷ floor_us. Cold start: a fresh process "
             "importing the runtime, loading the file and running one inference; RSS is that process's peak.")  # fmt: skip
    blocks.append(("p", notes))
    return blocks


def _single(res: dict[str, Any], name: str, max_drop: float) -> list[Block]:
    rows = res["results"]
    head, batch, threads = headline_rows(rows)
    blocks: list[Block] = [
        ("p", f"Machine: **{name}** — {res['machine'].get('cpu_model')} ({res['machine'].get('arch')}, "
              f"{res['machine'].get('cores')} cores){' — EMULATED: not real speed' if res['machine'].get('emulated') else ''}"),
        ("p", recommend_text(recommend(rows, max_drop))),
        ("p", "Parity: " + parity_verdict(rows)),
        ("p", _figures_text(headline_figures(rows, max_drop))),
        ("h2", f"Headline: batch {batch}, {threads} thread{'s' if threads > 1 else ''}"),
    ]  # fmt: skip
    headers = ["file", "runtime", "precision", "accuracy", "p50", "p90", "p99", "×floor", "cold start", "peak RSS",
               "size", "gzip", "sparsity", "parity"]  # fmt: skip
    table = [[_label(r), r["runtime"], r["precision"], _acc(r.get("accuracy")), _us(r["latency_us"]["p50"]),
              _us(r["latency_us"]["p90"]), _us(r["latency_us"]["p99"]), _num(r.get("floor_ratio"), "{:.2f}"),
              _num(r.get("cold_start_ms"), "{:.0f} ms"), _num(r.get("peak_rss_mb"), "{:.0f} MB"),
              _kb(r.get("size_bytes")), _kb(r.get("gzip_bytes")), _num(r.get("sparsity"), "{:.2f}"),
              _parity(r.get("parity"))] for r in sorted(head, key=_p50)]  # fmt: skip
    blocks.append(("table", headers, table))
    blocks.append(("h2", "Every row"))
    headers = ["file", "runtime", "threads", "batch", "p50", "p90", "p99", "mean ± std", "min", "max", "n",
               "throughput", "floor", "×floor"]  # fmt: skip
    table = [[_label(r), r["runtime"], str(r["threads"]), str(r["batch"]), _us(r["latency_us"]["p50"]),
              _us(r["latency_us"]["p90"]), _us(r["latency_us"]["p99"]),
              f"{_us(r['latency_us']['mean'])} ± {_us(r['latency_us']['std'])}", _us(r["latency_us"]["min"]),
              _us(r["latency_us"]["max"]), str(r["latency_us"]["n"]), _num(r.get("throughput_per_s"), "{:.0f}/s"),
              _us(r.get("floor_us")), _num(r.get("floor_ratio"), "{:.2f}")] for r in rows]  # fmt: skip
    blocks.append(("table", headers, table))
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
                      *[_acc(per[n].get("accuracy")) if n in per else "–" for n in names]])  # fmt: skip
    blocks.append(("table", headers, table))
    return blocks


# -- plots ---------------------------------------------------------------------------------------------------------


def make_plots(results: list[dict[str, Any]], names: list[str], max_drop: float = 1.0) -> list[tuple[str, bytes]]:
    """(title, PNG bytes): accuracy vs latency with the Pareto front, size per file, latency per thread count."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as e:
        raise ConfigError("plots need matplotlib: install edgepack[report] (or run without --html)") from e

    def png(fig: Any) -> bytes:
        buf = io.BytesIO()
        fig.tight_layout()
        fig.savefig(buf, format="png", dpi=110)
        plt.close(fig)
        return buf.getvalue()

    out = []
    markers = "osD^v<>"
    # 1. accuracy vs latency, Pareto front per machine
    fig, ax = plt.subplots(figsize=(8, 5))
    for m, (name, res) in enumerate(zip(names, results, strict=True)):
        head, batch, threads = headline_rows([r for r in res["results"] if r.get("accuracy") is not None])
        pts = [(_p50(r), 100 * r["accuracy"]) for r in head]
        for r, (lat, acc) in zip(head, pts, strict=True):
            color = {"onnxruntime": "C0", "litert": "C1", "keras": "C2"}.get(r["runtime"], "C3")
            ax.scatter(lat, acc, marker=markers[m % len(markers)], color=color, s=40, zorder=3)
            ax.annotate(_label(r), (lat, acc), fontsize=7, xytext=(4, 3), textcoords="offset points")
        front = pareto_front(pts)
        if front:
            ax.plot([pts[i][0] for i in front], [pts[i][1] for i in front], "-", color="C3", lw=1.5, zorder=2,
                    label=f"Pareto front ({name}, batch {batch}, {threads} thread)")  # fmt: skip
            ax.scatter([pts[i][0] for i in front], [pts[i][1] for i in front], s=160, facecolors="none",
                       edgecolors="C3", linewidths=1.5, zorder=4)  # fmt: skip
    for rt, color in (("onnxruntime", "C0"), ("litert", "C1"), ("keras", "C2")):
        ax.scatter([], [], color=color, label=rt)
    ax.set_xscale("log")
    ax.set_xlabel("p50 latency (µs, log scale)")
    ax.set_ylabel("accuracy on eval.npz (%)")
    ax.set_title("Accuracy vs latency")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, loc="center right")
    out.append(("Accuracy vs latency (Pareto front marked)", png(fig)))

    # 2. size per artifact (first machine: sizes do not depend on the machine)
    files: dict[str, dict[str, Any]] = {}
    for r in results[0]["results"]:
        files.setdefault(r["artifact"], r)
    labels = list(files)
    fig, ax = plt.subplots(figsize=(8, 0.45 * len(labels) + 1.5))
    ys = range(len(labels))
    ax.barh(
        [y + 0.2 for y in ys], [(files[n].get("size_bytes") or 0) / 1024 for n in labels], 0.4, label="size", color="C0"
    )
    ax.barh(
        [y - 0.2 for y in ys],
        [(files[n].get("gzip_bytes") or 0) / 1024 for n in labels],
        0.4,
        label="gzip -9",
        color="C1",
    )
    ax.set_yticks(list(ys), labels, fontsize=8)
    ax.set_xlabel("KB")
    ax.set_title("Size per file")
    ax.legend(fontsize=8)
    out.append(("Size per file", png(fig)))

    # 3. latency per thread count at the smallest batch
    fig, ax = plt.subplots(figsize=(9, 5))
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
    keys = list(groups)
    width = 0.8 / max(len(series), 1)
    for i, s in enumerate(series):
        ax.bar([k + i * width for k in range(len(keys))], [groups[g].get(s, 0) for g in keys], width,
               label=f"{s[0]}: {s[1]} thread{'s' if s[1] > 1 else ''}", color=f"C{i}")  # fmt: skip
    ax.set_xticks(
        [k + 0.4 - width / 2 for k in range(len(keys))],
        [f"{a}\n{rt}" for a, rt in keys],
        fontsize=7,
        rotation=30,
        ha="right",
    )
    ax.set_yscale("log")
    ax.set_ylabel("p50 latency (µs, log scale)")
    ax.set_title("Latency per thread count (smallest batch)")
    ax.legend(fontsize=8)
    out.append(("Latency per thread count", png(fig)))
    return out


# -- rendering -----------------------------------------------------------------------------------------------------


def _md_cell(s: str) -> str:
    return str(s).replace("|", "\\|").replace("\n", " ")


def to_markdown(blocks: list[Block], plot_files: dict[str, str] | None = None) -> str:
    """Markdown; plots appear as links to ``plot_files[title]`` when given (else they are left out)."""
    lines: list[str] = []
    for b in blocks:
        if b[0] == "h1":
            lines += [f"# {b[1]}", ""]
        elif b[0] == "h2":
            lines += [f"## {b[1]}", ""]
        elif b[0] == "p":
            lines += [b[1], ""]
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
    """HTML for a paragraph: escape, then the one Markdown mark the page uses (**bold**)."""
    parts = html.escape(text).split("**")
    return "".join(f"<strong>{p}</strong>" if i % 2 else p for i, p in enumerate(parts))


_CSS = """body{font-family:system-ui,sans-serif;margin:2em;color:#222;max-width:1400px}
table{border-collapse:collapse;margin:1em 0;font-size:13px}td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}
td:first-child,th:first-child{text-align:left}th{background:#f0f0f0}img{max-width:100%;border:1px solid #ddd;margin:.5em 0}
figure{margin:1em 0}figcaption{font-size:13px;color:#555}"""


def to_html(blocks: list[Block]) -> str:
    """A self-contained page: tables and base64-embedded PNG plots, no external resources."""
    body: list[str] = []
    title = "edgepack benchmark report"
    for b in blocks:
        if b[0] == "h1":
            title = b[1]
            body.append(f"<h1>{html.escape(b[1])}</h1>")
        elif b[0] == "h2":
            body.append(f"<h2>{html.escape(b[1])}</h2>")
        elif b[0] == "p":
            body.append(f"<p>{_inline_md(b[1])}</p>")
        elif b[0] == "table":
            head = "".join(f"<th>{html.escape(str(h))}</th>" for h in b[1])
            rows = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in b[2])
            body.append(f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>")
        elif b[0] == "img":
            data = base64.b64encode(b[2]).decode("ascii")
            body.append(f'<figure><img alt="{html.escape(b[1])}" src="data:image/png;base64,{data}">'
                        f"<figcaption>{html.escape(b[1])}</figcaption></figure>")  # fmt: skip
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
            f"<style>{_CSS}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n")  # fmt: skip


def plot_slug(title: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in title.lower()).strip("-").replace("--", "-") + ".png"


# -- writing ---------------------------------------------------------------------------------------------------


def write_report(
    results: list[dict[str, Any]],
    run_dir: Path | None = None,
    html_page: bool = False,
    out: Path | None = None,
    max_drop: float = 1.0,
) -> tuple[str, list[Recommendation]]:
    """Render the report and write it: a run directory keeps report.md, report.html and plots/*.png.

    Returns the Markdown and one recommendation per results.json (``row`` None: nothing within the budget).
    """
    import importlib.util

    from edgepack.files import atomic_write_bytes, atomic_write_text

    if max_drop < 0:
        raise ConfigError(f"--max-accuracy-drop: got {max_drop}; expected points >= 0")
    if html_page and out is None and run_dir is None:
        raise ConfigError("--html with results.json files: give --out FILE.html for the page")
    # Plots need matplotlib (the [report] extra): required for HTML, skipped for Markdown on a lean install.
    plots = bool(html_page or (run_dir and importlib.util.find_spec("matplotlib") is not None))
    blocks = build_blocks(results, max_drop, plots=plots)
    if run_dir is not None and (run_dir / "manifest.json").is_file():  # issue 16 hook: sensitivity tables
        from edgepack.export.sensitivity import report_blocks

        blocks += report_blocks(json.loads((run_dir / "manifest.json").read_text()), plots)
    plot_files: dict[str, str] = {}
    if run_dir is not None:  # a run directory keeps its plots as files too: DIR/plots/*.png
        for b in blocks:
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
    return md, [recommend(r["results"], max_drop) for r in results]
