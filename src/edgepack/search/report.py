"""What a search leaves in DIR: trials.json, the Pareto front in report.html (table + plot), and per objective
the best file within the budget with the recipe that made it (best/OBJECTIVE.toml, for `edgepack run`)."""

from __future__ import annotations

import base64
import html
import io
import shutil
from pathlib import Path
from typing import Any

from edgepack.files import atomic_path, atomic_write_json, atomic_write_text
from edgepack.search.pareto import OBJECTIVES, pareto_front

BEST = {"size": "gzip_bytes", "latency": "latency_us_p50"}


def write_results(job: Any, trials: list[dict[str, Any]]) -> dict[str, Any]:
    """trials.json, best/, plots/pareto.png and report.html in ``job.out``; returns the summary."""
    out = Path(job.out)
    done = [t for t in trials if t["status"] == "done"]
    front = [done[i]["trial_id"] for i in pareto_front([t["metrics"] for t in done], OBJECTIVES)]
    for t in trials:
        t["pareto"] = t["trial_id"] in front
    best = {name: _best(out, done, name, key) for name, key in BEST.items()}
    summary = {
        "out": str(out), "objective": job.objective.value, "max_drop": job.max_drop, "trials": len(trials),
        "done": len(done), "failed": len(trials) - len(done), "complete": len(trials) >= job.trials,
        "pareto": front, "best": best,
        "report": str(out / "report.html"),
    }  # fmt: skip
    atomic_write_json(out / "trials.json", {"summary": summary, "trials": trials})
    png = _plot(done, front, job.max_drop, out / "plots" / "pareto.png")
    atomic_write_text(out / "report.html", _html(summary, trials, png))
    return summary


def _best(out: Path, done: list[dict[str, Any]], name: str, key: str) -> dict[str, Any] | None:
    """Copy the best file within budget for ``key`` (ties: the more accurate) and its recipe into DIR/best/."""
    ok = [t for t in done if t["metrics"]["within_budget"]]
    if not ok:
        return None
    t = min(ok, key=lambda t: (t["metrics"][key], -t["metrics"]["accuracy"], t["trial_id"]))
    m = t["metrics"]
    src = Path(m["file"])
    dest = out / "best" / f"{name}{src.suffix}"
    with atomic_path(dest) as tmp:
        shutil.copyfile(src, tmp)
    bundle = src.with_suffix(".json")
    if bundle.is_file():  # the bundle names its model file: keep the pair side by side under the source's name
        with atomic_path(out / "best" / f"{name}-bundle" / bundle.name) as tmp:
            shutil.copyfile(bundle, tmp)
        with atomic_path(out / "best" / f"{name}-bundle" / src.name) as tmp:
            shutil.copyfile(src, tmp)
    recipe = Path(t["dir"]) / "recipe.toml"
    atomic_write_text(out / "best" / f"{name}.toml", recipe.read_text())
    return {"trial_id": t["trial_id"], "file": str(dest), "recipe": str(out / "best" / f"{name}.toml"),
            **{k: m.get(k) for k in ("artifact", "runtime", "threads", "accuracy", "drop_points", "latency_us_p50",
                                     "gzip_bytes", "gzip_ratio_vs_baseline_tflite")}}  # fmt: skip


def _plot(done: list[dict[str, Any]], front: list[str], max_drop: float, path: Path) -> bytes | None:
    if not done:
        return None
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:  # the [report] extra is not installed: the table is the report
        return None
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=110)
    xs = [t["metrics"]["gzip_bytes"] / 1024 for t in done]
    ys = [t["metrics"]["latency_us_p50"] for t in done]
    cs = [t["metrics"]["accuracy"] * 100 for t in done]
    sc = ax.scatter(xs, ys, c=cs, cmap="viridis", s=40, edgecolors="none")
    fig.colorbar(sc, ax=ax, label="accuracy of the file (%)")
    for t, x, y in zip(done, xs, ys, strict=True):
        if t["trial_id"] in front:
            ax.scatter([x], [y], s=140, facecolors="none", edgecolors="crimson", linewidths=1.5)
        if not t["metrics"]["within_budget"]:
            ax.scatter([x], [y], marker="x", color="grey", s=60)
    ax.set_xscale("log")
    ax.set_xlabel("gzip size (KiB, log)")
    ax.set_ylabel("p50 latency, batch 1 (µs)")
    ax.set_title(f"search trials: red ring = Pareto front, x = over the {max_drop:g}-point budget", fontsize=9)
    ax.grid(True, alpha=0.3)
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png")
    plt.close(fig)
    png = buf.getvalue()
    with atomic_path(path) as tmp:
        tmp.write_bytes(png)
    return png


def _config_text(config: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in sorted(config.items()))


def _html(summary: dict[str, Any], trials: list[dict[str, Any]], png: bytes | None) -> str:
    e = html.escape
    done = [t for t in trials if t["status"] == "done"]
    front = [t for t in done if t["pareto"]]
    front.sort(key=lambda t: t["metrics"]["gzip_bytes"])

    def row(t: dict[str, Any]) -> str:
        m = t["metrics"]
        ratio = m.get("gzip_ratio_vs_baseline_tflite")
        return (f"<tr><td>{e(t['trial_id'])}</td><td>{e(m['artifact'])}</td><td>{e(m['runtime'])}</td>"
                f"<td>{m['threads']}</td><td>{m['accuracy'] * 100:.2f}</td><td>{m['drop_points']:+.2f}</td>"
                f"<td>{'yes' if m['within_budget'] else 'no'}</td><td>{m['latency_us_p50']:.1f}</td>"
                f"<td>{m['gzip_bytes']:,}</td><td>{f'{ratio:.1f}x' if ratio else ''}</td>"
                f"<td><small>{e(_config_text(t['config']))}</small></td></tr>")  # fmt: skip

    head = ("<tr><th>trial</th><th>file</th><th>runtime</th><th>threads</th><th>accuracy %</th><th>drop (points)</th>"
            "<th>within budget</th><th>p50 µs</th><th>gzip bytes</th><th>vs baseline fp32 .tflite</th>"
            "<th>recipe values</th></tr>")  # fmt: skip
    best_rows = []
    for name, b in summary["best"].items():
        if b is None:
            best_rows.append(f"<li>{e(name)}: no trial within the budget</li>")
        else:
            best_rows.append(f"<li>{e(name)}: trial {e(b['trial_id'])}, {e(b['artifact'])} in {e(b['runtime'])}, "
                             f"accuracy {b['accuracy'] * 100:.2f}% ({b['drop_points']:+.2f} points), "
                             f"p50 {b['latency_us_p50']:.1f} µs, gzip {b['gzip_bytes']:,} B &rarr; "
                             f"<code>{e(b['file'])}</code>, recipe <code>{e(b['recipe'])}</code></li>")  # fmt: skip
    failed = [t for t in trials if t["status"] == "failed"]
    failed_rows = "".join(f"<tr><td>{e(t['trial_id'])}</td><td>{e(t.get('error') or '')}</td>"
                          f"<td><small>{e(_config_text(t['config']))}</small></td></tr>" for t in failed)  # fmt: skip
    img = f'<img alt="Pareto plot" src="data:image/png;base64,{base64.b64encode(png).decode()}">' if png else ""
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>edgepack search</title>
<style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;
padding:3px 6px;text-align:right}}td:last-child{{text-align:left}}</style></head><body>
<h1>edgepack search</h1>
<p>objective <b>{e(summary["objective"])}</b>, budget {summary["max_drop"]:g} points below the baseline's accuracy;
{summary["done"]} trials measured, {summary["failed"]} failed. Accuracy is the exported file's in its own runtime on
the held-out set, latency the p50 at batch 1.</p>
<h2>Best within the budget</h2><ul>{"".join(best_rows)}</ul>
<h2>Pareto front (accuracy x latency x size, {len(front)} of {len(done)} trials)</h2>
<table>{head}{"".join(row(t) for t in front)}</table>
{img}
<h2>All measured trials</h2><table>{head}{"".join(row(t) for t in done)}</table>
<h2>Failed trials</h2><table><tr><th>trial</th><th>error</th><th>recipe values</th></tr>{failed_rows}</table>
</body></html>
"""
