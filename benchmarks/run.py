"""The benchmark matrix behind `make bench`.

Trains, compresses and exports a fresh run on the embedded mnist-5k data (`edgepack run`, the default recipe), then
benchmarks every artifact x {onnxruntime for .onnx, LiteRT for .tflite, Keras for the .keras models} x threads
{1, 2} x batch {1, 32}, and writes

    benchmarks/results/<cpu>/results.json   the results.json (machine block, compute floor, one row per measurement)
    benchmarks/results/<cpu>/report.md      the Markdown report

where <cpu> names the kind of CPU (arch-cpu-model-cores, e.g. x86_64-amd-epyc-2c), and refreshes the README's
results section (between the `bench-results` markers): one table per CPU kind measured, each with its fingerprint.

    python benchmarks/run.py                      # the whole matrix (make bench)
    python benchmarks/run.py --run runs/demo      # benchmark an existing run directory, no training
    python benchmarks/run.py --readme-only        # rewrite the README's tables from benchmarks/results/*/

Then the zoo row set (``--zoo``, default resnet8,mobilenet-v1; ``--zoo ''`` skips it): each model trained,
compressed and exported the same way (``edgepack run --model NAME``), benchmarked at batch 1 and one thread, and
written to benchmarks/results/<cpu>/zoo-NAME.json; the README gets one line per model (its recommended file and
× floor) under each CPU's table. ``--zoo-run NAME=DIR`` benchmarks an existing run of that model instead.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import platform
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))  # works from a plain checkout too

from edgepack.bench.core import resolve_runtimes, run_bench  # noqa: E402
from edgepack.bench.report import (  # noqa: E402
    _acc_ci,
    _num,
    _precision,
    build_blocks,
    headline_figures,
    headline_rows,
    recommend,
    to_markdown,
)
from edgepack.files import atomic_write_json, atomic_write_text  # noqa: E402
from edgepack.machine import cpu_model  # noqa: E402
from edgepack.recipe import BenchSettings  # noqa: E402
from edgepack.runtime.predictor import installed_engines  # noqa: E402

README_START = "<!-- bench-results:start -->"
README_END = "<!-- bench-results:end -->"


def default_label() -> str:
    """A stable file name for this kind of machine, e.g. x86_64-amd-epyc-2c (host names change per container)."""
    import os

    cpu = re.sub(r"[^a-z0-9]+", "-", cpu_model().lower()).strip("-")[:40] or "cpu"
    return f"{platform.machine()}-{cpu}-{os.cpu_count()}c"


def edgepack(*args: str) -> None:
    """Run an edgepack command; a failed check (exit 1: parity gate, accuracy budget) still leaves files to
    benchmark, and the report shows the verdict, so only bad input or a crash stops the matrix."""
    cmd = [sys.executable, "-m", "edgepack", *args]
    print("+ edgepack " + " ".join(args), flush=True)
    env = dict(__import__("os").environ)
    env["PYTHONPATH"] = str(ROOT / "src") + (":" + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    code = subprocess.run(cmd, env=env).returncode
    if code == 1:
        print(f"edgepack {args[0]} reported a failed check (exit 1); benchmarking what it wrote", flush=True)
    elif code != 0:
        raise SystemExit(f"edgepack {args[0]} failed with exit {code}")


def make_run(out: Path, model: str = "seed-cnn") -> None:
    """A fresh run: the default recipe through train, compress and export (the matrix below is the bench)."""
    edgepack("run", "--data", "mnist-5k", "--model", model, "--out", str(out), "--force", "-q",
             "--stages", "train,compress,export")  # fmt: skip


def fingerprint(results: dict) -> str:
    """What identifies the CPU kind and software a table was measured with, and how quiet the machine was."""
    m = results["machine"]
    key = json.dumps([m.get("cpu_model"), m.get("arch"), m.get("cores"), m.get("isa")], sort_keys=True)
    digest = hashlib.sha256(key.encode()).hexdigest()[:8]
    loads = [(m.get(f"state_{w}") or {}).get("load_avg") for w in ("start", "end")]
    load = " / ".join(f"{v[0]:.2f}" if v else "?" for v in loads) if any(loads) else "not recorded"
    governor = (m.get("state_start") or {}).get("governor") or "not readable"
    floor = results.get("floor") or {}
    spread = f", spread {floor['spread']:.1%}" if floor.get("spread") is not None else ""
    return (f"CPU fingerprint `{digest}`: {m['cpu_model']} ({m['arch']}, {m['cores']} cores, "
            f"{', '.join(m.get('isa', []))}); onnxruntime {m['libraries'].get('onnxruntime', '?')}, ai-edge-litert "
            f"{m['libraries'].get('ai-edge-litert', '?')}; measured {results.get('created', '?')}, load average "
            f"(1 min, start / end) {load}, governor {governor}. Compute floor: fp32 "
            f"{floor.get('fp32_macs_per_s', 0) / 1e9:.1f} GMAC/s, int8 {floor.get('int8_macs_per_s', 0) / 1e9:.1f} "
            f"GMAC/s on one core{spread}.")  # fmt: skip


def readme_table(results: dict, max_drop: float) -> str:
    """One CPU's README table: every deployable file and the Keras reference at batch 1, one thread."""
    head, batch, threads = headline_rows(results["results"])
    rec = recommend(results["results"], max_drop)
    m = results["machine"]
    lines = [
        f"### {m['cpu_model']} ({m['arch']}, {m['cores']} cores)",
        "",
        fingerprint(results) + f" Batch {batch}, {threads} thread.",
        "",
        *[f"> **WARNING** — {w}" for w in results.get("warnings", [])],
        "",
        "| file | runtime | precision | accuracy [95% CI] | p50 | p99 | × floor | gzip | cold start | peak RSS |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in sorted(head, key=lambda r: r["latency_us"]["p50"]):
        name = f"{r['artifact']} `{r['call']}`" if r["format"] == "keras" else r["artifact"]
        star = " **(recommended)**" if rec.row is r else ""
        gz = f"{r['gzip_bytes'] / 1024:.1f} KB" if r.get("gzip_bytes") else "–"
        lines.append(
            f"| {name}{star} | {r['runtime']} | {_precision(r)} | {_acc_ci(r)} | {r['latency_us']['p50']:.1f} µs | "
            f"{r['latency_us']['p99']:.1f} µs | {_num(r.get('floor_ratio'), '{:.2f}')} | {gz} | "
            f"{_num(r.get('cold_start_ms'), '{:.0f} ms')} | {_num(r.get('peak_rss_mb'), '{:.0f} MB')} |"
        )
    return "\n".join(lines).replace("\n\n\n", "\n\n")


def zoo_table(files: list[Path], max_drop: float) -> str:
    """One CPU's zoo lines: per model, the file recommended within ``max_drop`` of its own float baseline."""
    lines = ["", "Zoo models on mnist-5k (`edgepack run --model NAME`, default recipe; batch 1, 1 thread):", "",
             "| model | MACs | recommended file | runtime | precision | accuracy [95% CI] | p50 | × floor | gzip |",
             "|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for f in files:
        results = json.loads(f.read_text(encoding="utf-8"))
        rec = recommend(results["results"], max_drop)
        r = rec.row
        model = results.get("zoo_model", f.stem.removeprefix("zoo-"))
        if r is None:
            lines.append(f"| {model} | | no file within {max_drop:g} point | | | | | | |")
            continue
        gz = f"{r['gzip_bytes'] / 1024:.1f} KB" if r.get("gzip_bytes") else "–"
        macs = f"{r['macs'] / 1e6:.2f} M" if r.get("macs") else "–"
        lines.append(f"| {model} | {macs} | {r['artifact']} | {r['runtime']} | {_precision(r)} | {_acc_ci(r)} | "
                     f"{r['latency_us']['p50']:.1f} µs | {_num(r.get('floor_ratio'), '{:.2f}')} | {gz} |")  # fmt: skip
    warnings = sorted({w for f in files for w in json.loads(f.read_text(encoding="utf-8")).get("warnings", [])})
    lines += [""] + [f"> **WARNING** (zoo rows) — {w}" for w in warnings] if warnings else []
    return "\n".join(lines)


def all_tables(results_dir: Path, max_drop: float) -> tuple[str, list[str]]:
    """The README section: one table per CPU kind with results under ``results_dir`` (<cpu>/results.json), and
    its zoo lines (<cpu>/zoo-*.json) below it."""
    files = sorted(results_dir.glob("*/results.json"))
    tables, sources = [], []
    for f in files:
        table = readme_table(json.loads(f.read_text(encoding="utf-8")), max_drop)
        zoo = sorted(f.parent.glob("zoo-*.json"))
        if zoo:
            table += "\n" + zoo_table(zoo, max_drop)
        tables.append(table)
        sources += [str(g.relative_to(ROOT) if g.is_relative_to(ROOT) else g) for g in [f, *zoo]]
    return "\n\n".join(tables), sources


def update_readme(table: str, source: str) -> bool:
    readme = ROOT / "README.md"
    if not readme.is_file():
        return False
    text = readme.read_text(encoding="utf-8")
    if README_START not in text or README_END not in text:
        return False
    before, rest = text.split(README_START, 1)
    _, after = rest.split(README_END, 1)
    block = f"{README_START}\n<!-- written by benchmarks/run.py from {source} -->\n{table}\n{README_END}"
    atomic_write_text(readme, before + block + after)
    return True


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--run", type=Path, help="benchmark this existing run directory instead of making a fresh one")
    p.add_argument("--run-dir", type=Path, default=ROOT / "runs" / "bench-mnist-5k", help="where the fresh run goes")
    p.add_argument("--label", help="machine name for the results file (default: arch-cpu-cores)")
    p.add_argument("--results-dir", type=Path, default=ROOT / "benchmarks" / "results")
    p.add_argument("--threads", default="1,2")
    p.add_argument("--batch", default="1,32")
    p.add_argument("--min-time", type=float, default=0.3, help="seconds per timing window (default 0.3)")
    p.add_argument("--windows", type=int, default=5, help="timing windows per row; the median is reported")
    p.add_argument("--max-accuracy-drop", type=float, default=1.0)
    p.add_argument("--no-readme", action="store_true", help="do not touch README.md")
    p.add_argument("--readme-only", action="store_true", help="only rewrite the README's tables from the results")
    p.add_argument("--zoo", default="resnet8,mobilenet-v1", help="zoo models for the row set ('' for none)")
    p.add_argument(
        "--zoo-run",
        action="append",
        default=[],
        metavar="NAME=DIR",
        help="benchmark this existing run of zoo model NAME instead of making one",
    )
    p.add_argument("--no-seed", action="store_true", help="only the zoo row set (the seed CNN's table is kept)")
    args = p.parse_args()
    zoo_runs = {}
    for item in args.zoo_run:
        name, sep, path = item.partition("=")
        if not sep or not path:
            raise SystemExit(f"--zoo-run: got {item!r}; expected NAME=DIR")
        zoo_runs[name] = Path(path)
    zoo = [m for m in args.zoo.split(",") if m.strip()] + [m for m in zoo_runs if m not in args.zoo.split(",")]
    if args.readme_only:
        tables, sources = all_tables(args.results_dir, args.max_accuracy_drop)
        if not update_readme(tables, ", ".join(sources)):
            raise SystemExit(f"README.md has no {README_START} ... {README_END} markers")
        print(tables)
        return 0

    start = time.perf_counter()
    label = args.label or default_label()
    settings = BenchSettings(threads=args.threads, batch=args.batch, min_time=args.min_time, windows=args.windows,
                             label=label)  # fmt: skip
    written = []
    if not args.no_seed:
        run_dir = args.run
        if run_dir is None:
            run_dir = args.run_dir
            make_run(run_dir)
        prepared = time.perf_counter() - start
        results = run_bench([str(run_dir)], settings, resolve_runtimes(None), progress=lambda m: print(m, flush=True))
        results["make_bench"] = {"seconds_total": round(time.perf_counter() - start, 1),
                                 "seconds_train_compress_export": round(prepared, 1), "run_dir": str(run_dir)}  # fmt: skip
        results["headline_figures"] = headline_figures(results["results"], args.max_accuracy_drop)
        out_json = args.results_dir / label / "results.json"
        out_md = args.results_dir / label / "report.md"
        atomic_write_json(out_json, results)
        atomic_write_json(Path(run_dir) / "bench" / "results.json", results)
        atomic_write_text(out_md, to_markdown(build_blocks([results], args.max_accuracy_drop, plots=False)))
        print(readme_table(results, args.max_accuracy_drop))
        print(json.dumps(results["headline_figures"], indent=2))
        written += [out_json, out_md]
    zoo_settings = BenchSettings(threads=(1,), batch=(1,), min_time=args.min_time, windows=args.windows, label=label)
    for model in zoo:
        run_dir = zoo_runs.get(model)
        if run_dir is None:
            run_dir = args.run_dir.with_name(f"bench-{model}")
            make_run(run_dir, model)
        results = run_bench([str(run_dir)], zoo_settings, installed_engines(), progress=lambda m: print(m, flush=True))
        results["zoo_model"] = model
        out_zoo = args.results_dir / label / f"zoo-{model}.json"
        atomic_write_json(out_zoo, results)
        written.append(out_zoo)
    tables, sources = all_tables(args.results_dir, args.max_accuracy_drop)
    if not args.no_readme and not update_readme(tables, ", ".join(sources)):
        print(f"README.md has no {README_START} ... {README_END} markers: table not written there")
    print(f"\nwrote {', '.join(map(str, written))} in {time.perf_counter() - start:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
