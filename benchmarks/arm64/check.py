"""The arm64 check: every exported file of a run, through the lean runtime, as linux/aarch64 under qemu.

For each emulated CPU model (cortex-a53: ARMv8.0 NEON; neoverse-n1: + dot product; max,sme=off: + SVE2/i8mm,
the three ARM int8 code paths) it runs ``edgepack.runtime`` on ``export/eval.npz`` for every bundle and
compares with the same script run on this x86 host: float files must agree within ``FLOAT_ATOL``, quantized
files must give identical labels (the largest probability difference is reported too), and on every CPU
``predict()``'s planned fast path must give the bits of the engine-call path. Beside that it runs
the runtime's own tests under emulation, and ``edgepack bench`` with only the base install (results.json
marked emulated) merged with x86 results by ``edgepack report``. Prints a per-CPU x per-file table; exit 1 on
any mismatch, crash or failure, 2 on bad input.

    python benchmarks/arm64/check.py RUN_DIR [--cpus cortex-a53,neoverse-n1] [--reference DIR]

Emulated timings say nothing about ARM speed and are never shown as such: real boards run ``edgepack bench``
(docs/arm64.md).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import qemu_env as arm64env  # noqa: E402 - the sibling module, found through the line above

HERE = Path(__file__).resolve().parent
PREDICT = HERE / "predict_all.py"
# Float files: max |probability difference| allowed between x86 and aarch64. Quantized files (integer
# arithmetic, exact in principle): labels must be identical; their largest difference is reported, not gated.
FLOAT_ATOL = {"fp32": 1e-5, "fp16": 1e-5}
LABEL_RULE = ("int8", "dynamic")
RUNTIME_TESTS = "tests/test_runtime*.py"
# The runtime's tests take ~2 minutes per CPU model under emulation (its 8-thread x 1000-prediction test most
# of it): one model keeps the whole check inside its 5-minute budget; the file comparison covers all three.
TEST_CPUS = "cortex-a53"
BENCH_CPU = "neoverse-n1"
# Under emulation the bench only has to show it runs and writes results.json; its timings mean nothing.
QUICK_BENCH = ["--threads", "1", "--batch", "1", "--min-time", "0.05", "--windows", "1"]
LAST = "last"  # .arm64/last/: the latest check's emulated results.json and merged report, kept for a look
# Images per file: under emulation a 2.6 M-MAC CNN runs at roughly 0.2 GMAC/s (fp32), so the demo's 7 files x
# 1000 images x 3 CPU models alone take ~8 CPU-minutes. The first 256 keep the check inside 5 minutes;
# --limit 0 runs all of eval.npz.
LIMIT = 256
GUEST_TIMEOUT_S = 900


@dataclass
class Row:
    cpu: str
    file: str
    precision: str
    backend: str
    rule: str
    max_abs_diff: float | None
    same_labels: int | None
    n: int | None
    passed: bool
    note: str = ""


def rule_for(precision: str) -> str:
    if precision in LABEL_RULE:
        return "labels"
    return f"|d|<={FLOAT_ATOL.get(precision, min(FLOAT_ATOL.values())):g}"  # unknown precision: the strict rule


def read_status(out_dir: Path) -> dict[str, dict]:
    """file -> its last status event from predict_all.py ('start' left alone means it crashed there)."""
    status: dict[str, dict] = {}
    path = out_dir / "status.jsonl"
    if path.exists():
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.strip():
                event = json.loads(line)
                status[event["file"]] = event
    return status


def compare(cpu: str, files: list[str], ref_dir: Path, out_dir: Path, exit_code: int | None) -> list[Row]:
    ref, got = read_status(ref_dir), read_status(out_dir)
    rows = []
    for name in files:
        r, g = ref.get(name, {}), got.get(name, {})
        precision = r.get("precision") or g.get("precision") or "?"
        row = Row(cpu, name, precision, g.get("backend") or r.get("backend") or "?", rule_for(precision),
                  None, None, None, False)  # fmt: skip
        if r.get("event") != "done":
            row.note = f"x86 reference failed: {r.get('error', 'not run')}"
        elif g.get("event") == "error":
            row.note = g["error"]
        elif g.get("event") == "start":
            row.note = f"crashed here (exit {exit_code})"
        elif g.get("event") != "done":
            row.note = f"not run (exit {exit_code})"
        else:
            a, b = np.load(ref_dir / f"{name}.npy"), np.load(out_dir / f"{name}.npy")
            if a.shape != b.shape:
                row.note = f"shape {b.shape} != x86 {a.shape}"
            else:
                row.max_abs_diff = float(np.max(np.abs(a.astype(np.float64) - b))) if a.size else 0.0
                row.same_labels, row.n = int(np.sum(a.argmax(1) == b.argmax(1))), len(a)
                if row.rule == "labels":
                    row.passed = row.same_labels == row.n
                else:
                    row.passed = row.max_abs_diff <= float(row.rule.split("<=")[1])
                # predict()'s fast path against the engine-call path on the same CPU: the same bits, every file
                if g.get("fast_equals_reference") is False:
                    row.passed = False
                    row.note = (
                        f"predict() differs from the engine-call path by {g.get('fast_vs_reference_max_diff'):.2e}"
                    )
        rows.append(row)
    return rows


def print_table(rows: list[Row]) -> None:
    header = ("cpu", "file", "precision", "backend", "rule", "max |d|", "same labels", "verdict")
    body = [
        (r.cpu, r.file, r.precision, r.backend, r.rule,
         "-" if r.max_abs_diff is None else f"{r.max_abs_diff:.2e}",
         "-" if r.n is None else f"{r.same_labels}/{r.n}",
         "ok" if r.passed else f"FAIL {r.note}".strip())
        for r in rows
    ]  # fmt: skip
    widths = [max(len(str(c)) for c in col) for col in zip(header, *body, strict=True)]
    widths[-1] = 0  # last column is free text
    line = lambda cells: "  ".join(str(c).ljust(w) for c, w in zip(cells, widths, strict=True)).rstrip()  # noqa: E731
    print(line(header))
    print(line(["-" * max(w, 3) for w in widths]))
    for cells in body:
        print(line(cells))


def host_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(arm64env.ROOT / "src"), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    for key in ("QEMU_CPU", "QEMU_LD_PREFIX", "EDGEPACK_EMULATED"):
        env.pop(key, None)  # the reference is the host's own run, never marked emulated
    return env


def export_dir_of(path: Path) -> Path:
    export = path / "export" if (path / "export").is_dir() else path
    if not (export / "eval.npz").is_file():
        raise SystemExit(
            f"{path}: no export/eval.npz; give a run directory after `edgepack export` (or its export folder)"
        )
    return export


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path, help="run directory (or its export folder)")
    parser.add_argument("--cpus", default=",".join(arm64env.CPUS),
                        help=f"qemu -cpu models, comma separated (default {','.join(arm64env.CPUS)})")  # fmt: skip
    parser.add_argument("--files", default="", help="bundle names, comma separated (default: every bundle)")
    parser.add_argument("--reference", type=Path, default=None,
                        help="folder of x86 results: reused if present, else computed there and kept")  # fmt: skip
    parser.add_argument("--tests", default=RUNTIME_TESTS,
                        help=f"runtime tests to run under emulation (glob; '' to skip; default {RUNTIME_TESTS})")  # fmt: skip
    parser.add_argument("--test-cpus", default=TEST_CPUS,
                        help=f"CPU models the runtime tests run under ('all' = every --cpus; default {TEST_CPUS})")  # fmt: skip
    parser.add_argument("--bench-cpu", default=BENCH_CPU,
                        help=f"CPU model for the emulated `edgepack bench` ('' to skip; default {BENCH_CPU})")  # fmt: skip
    parser.add_argument("--limit", type=int, default=LIMIT,
                        help=f"compare on the first N images of eval.npz (0 = all; default {LIMIT})")  # fmt: skip
    parser.add_argument("--jobs", type=int, default=3, help="emulated processes at once (default 3)")
    parser.add_argument("--json", type=Path, default=None, help="also write the rows as JSON to this file")
    args = parser.parse_args(argv)

    t_start = time.perf_counter()
    cpus = _join_cpu_options([c for c in args.cpus.split(",") if c])  # "max,sme=off" holds a comma
    test_cpus = (
        (cpus if args.test_cpus == "all" else _join_cpu_options(args.test_cpus.split(","))) if args.tests else []
    )
    bench_cpus = [args.bench_cpu] if args.bench_cpu else []
    if not cpus:
        print(
            f"--cpus {args.cpus!r}: give at least one qemu -cpu model, e.g. {','.join(arm64env.CPUS)}", file=sys.stderr
        )
        return 2
    try:
        export = export_dir_of(args.run_dir)
        sys.path.insert(0, str(arm64env.ROOT / "src"))
        from predict_all import bundles

        bundle_paths = bundles(export, [f for f in args.files.split(",") if f] or None)
    except SystemExit as exc:
        print(exc, file=sys.stderr)
        return 2
    files = [p.stem for p in bundle_paths]
    if not files:
        print(f"{export}: no bundles (NAME.json beside an exported model); nothing to check", file=sys.stderr)
        return 2

    environment = arm64env.build(list(dict.fromkeys([*cpus, *test_cpus, *bench_cpus])))
    t_env = time.perf_counter() - t_start
    work = Path(tempfile.mkdtemp(prefix="check-", dir=arm64env.CACHE))
    try:
        ref_dir = args.reference or work / "x86"
        if not (ref_dir / "status.jsonl").exists():
            _log(f"x86 reference: {len(files)} file(s) on this host")
            cmd = [
                sys.executable,
                str(PREDICT),
                str(export),
                str(ref_dir),
                "--limit",
                str(args.limit),
                "--files",
                *files,
            ]
            subprocess.run(cmd, env=host_env(), check=True, capture_output=True)
        else:
            _log(f"x86 reference: reusing {ref_dir}")

        # Longest first: the runtime tests, then the comparisons, then the bench.
        jobs = [Job(f"tests {cpu}", cpu, ["-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", "not slow and not arm64",
                                          *_runtime_tests(args.tests)], work / f"pytest-{arm64env.cpu_dirname(cpu)}.txt")
                for cpu in test_cpus]  # fmt: skip
        for cpu in cpus:
            out_dir = work / arm64env.cpu_dirname(cpu)
            out_dir.mkdir()
            jobs.append(Job(f"predict {cpu}", cpu, [str(PREDICT), str(export), str(out_dir), "--limit", str(args.limit), "--files", *files],
                            out_dir / "log.txt"))  # fmt: skip
        bench_out = work / "bench"
        bench_paths = _one_per_format(bundle_paths)
        for cpu in bench_cpus:
            args_bench = ["-m", "edgepack", "bench", *map(str, bench_paths), *QUICK_BENCH, "--quiet",
                          "--label", f"qemu -cpu {cpu} (emulated)", "--out", str(bench_out / f"qemu-{arm64env.cpu_dirname(cpu)}.json")]  # fmt: skip
            jobs.append(Job(f"bench {cpu}", cpu, args_bench, work / f"bench-{arm64env.cpu_dirname(cpu)}.txt"))
        run_jobs(environment, jobs, args.jobs)

        by_name = {j.name: j for j in jobs}
        rows = [row for cpu in cpus
                for row in compare(cpu, files, ref_dir, work / arm64env.cpu_dirname(cpu), by_name[f"predict {cpu}"].exit_code)]  # fmt: skip
        machines = {cpu: _read_json(work / arm64env.cpu_dirname(cpu) / "machine.json") for cpu in cpus}
        print()
        for cpu in cpus:
            m = machines[cpu]
            flag = "emulated" if m.get("emulated") else "NOT MARKED EMULATED"
            print(f"-cpu {cpu:12s} {m.get('arch', '?')} isa={','.join(m.get('isa', [])) or '?'} ({flag}); "
                  f"wall {by_name[f'predict {cpu}'].seconds:.0f} s under emulation (not ARM speed)")  # fmt: skip
        print()
        print_table(rows)
        machine_ok = all(m.get("emulated") is True for m in machines.values())
        tests_ok = all(_report_tests(by_name[f"tests {cpu}"]) for cpu in test_cpus) if test_cpus else True
        bench_ok = all(_report_bench(by_name[f"bench {cpu}"], args.run_dir, bench_paths, bench_out)
                       for cpu in bench_cpus)  # fmt: skip
    finally:
        shutil.rmtree(work, ignore_errors=True)

    n_fail = sum(not r.passed for r in rows)
    if args.json:
        args.json.write_text(json.dumps([r.__dict__ for r in rows], indent=1), encoding="utf-8")
    ok = n_fail == 0 and tests_ok and machine_ok and bench_ok
    problems = [text for failed, text in [(not tests_ok, "runtime tests failed"), (not bench_ok, "emulated bench failed"),
                                          (not machine_ok, "a run was not marked emulated")] if failed]  # fmt: skip
    print(f"\narm64 check {'passed' if ok else 'FAILED'}: {len(rows) - n_fail}/{len(rows)} file x CPU agree"
          f"{''.join('; ' + p for p in problems)} (environment {t_env:.0f} s, total {time.perf_counter() - t_start:.0f} s)")  # fmt: skip
    return 0 if ok else 1


@dataclass
class Job:
    """One emulated ``python3 ARGS`` under ``-cpu CPU``, its output in ``log``."""

    name: str
    cpu: str
    args: list[str]
    log: Path
    exit_code: int | None = None
    seconds: float = 0.0

    def output(self) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace") if self.log.exists() else ""


def run_jobs(environment: arm64env.Arm64Env, jobs: list[Job], parallel: int) -> None:
    """Run the jobs, ``parallel`` at a time (an emulated process is mostly one busy thread); kill all on error."""
    pending, running = list(jobs), {}
    try:
        while pending or running:
            while pending and len(running) < max(1, parallel):
                job = pending.pop(0)
                _log(f"{job.name}: started under emulation")
                log = open(job.log, "wb")  # noqa: SIM115 - closed when the job ends
                proc = subprocess.Popen(environment.command(job.cpu, job.args), env=environment.env(job.cpu),
                                        cwd=arm64env.ROOT, stdout=log, stderr=subprocess.STDOUT)  # fmt: skip
                running[job.name] = (job, proc, log, time.perf_counter())
            time.sleep(0.2)
            for name, (job, proc, log, t0) in list(running.items()):
                if proc.poll() is None and time.perf_counter() - t0 < GUEST_TIMEOUT_S:
                    continue
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
                log.close()
                job.exit_code, job.seconds = proc.returncode, time.perf_counter() - t0
                _log(f"{job.name}: exit {job.exit_code} after {job.seconds:.0f} s")
                del running[name]
    finally:
        for _, proc, log, _ in running.values():  # interrupted: leave no emulated process behind
            proc.kill()
            proc.wait()
            log.close()


def _runtime_tests(pattern: str) -> list[str]:
    return sorted(str(p.relative_to(arm64env.ROOT)) for p in arm64env.ROOT.glob(pattern))


def _report_tests(job: Job) -> bool:
    lines = [ln for ln in job.output().strip().splitlines() if ln.strip()]
    if not any(a.startswith("tests/") for a in job.args):
        print(f"\nruntime tests under -cpu {job.cpu}: no test file matches: FAIL")
        return False
    print(f"\nruntime tests under -cpu {job.cpu} ({' '.join(a for a in job.args if a.startswith('tests/'))}): "
          f"exit {job.exit_code}: {lines[-1] if lines else '(no output)'}")  # fmt: skip
    if job.exit_code != 0:
        print("    " + "\n    ".join(lines[-40:]))
    return job.exit_code == 0


def _one_per_format(bundle_paths: list[Path]) -> list[Path]:
    """One bundle per format, int8 when there is one: enough to show the bench runs (its timings mean nothing)."""
    chosen: dict[str, Path] = {}
    for path in bundle_paths:
        meta = _read_json(path)
        fmt = meta.get("format")
        if fmt not in chosen or (
            meta.get("precision") == "int8" and _read_json(chosen[fmt]).get("precision") != "int8"
        ):
            chosen[fmt] = path
    return list(chosen.values())


def _report_bench(job: Job, run_dir: Path, bundle_paths: list[Path], bench_out: Path) -> bool:
    """The emulated results.json must say emulated; `edgepack report` must merge it with x86 results."""
    emulated = bench_out / f"qemu-{arm64env.cpu_dirname(job.cpu)}.json"
    if job.exit_code != 0 or not emulated.exists():
        print(f"\nemulated bench under -cpu {job.cpu}: exit {job.exit_code}: FAIL\n    "
              + "\n    ".join(job.output().strip().splitlines()[-20:]))  # fmt: skip
        return False
    results = _read_json(emulated)
    x86 = run_dir / "bench" / "results.json"
    if not x86.exists():  # no `edgepack bench` on this run yet: a quick x86 one, same settings
        x86 = bench_out / "x86.json"
        cmd = [
            sys.executable,
            "-m",
            "edgepack",
            "bench",
            *map(str, bundle_paths),
            *QUICK_BENCH,
            "--quiet",
            "--out",
            str(x86),
        ]
        subprocess.run(cmd, env=host_env(), capture_output=True, check=False)
    last = arm64env.CACHE / LAST
    last.mkdir(exist_ok=True)
    shutil.copy(emulated, last / emulated.name)
    report_md = last / "report.md"
    rep = subprocess.run([sys.executable, "-m", "edgepack", "report", str(x86), str(last / emulated.name), "--out", str(report_md)],
                         env=host_env(), capture_output=True, text=True)  # fmt: skip
    marked = results.get("machine", {}).get("emulated") is True
    merged = report_md.exists() and "EMULATED" in report_md.read_text(encoding="utf-8")
    print(f"\nemulated bench under -cpu {job.cpu}: {len(results.get('results', []))} rows, machine.emulated="
          f"{results.get('machine', {}).get('emulated')}; `edgepack report` with the x86 results: exit {rep.returncode}"
          f"{', emulated machine flagged' if merged else ''} -> {report_md} ({'ok' if marked and merged else 'FAIL'})")  # fmt: skip
    if not merged:
        print("    " + rep.stderr.strip()[-800:])
    return marked and merged


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def _join_cpu_options(parts: list[str]) -> list[str]:
    out: list[str] = []
    for part in parts:
        if "=" in part and out:
            out[-1] += f",{part}"
        else:
            out.append(part)
    return out


def _log(message: str) -> None:
    print(f"[arm64] {message}", file=sys.stderr, flush=True)


if __name__ == "__main__":
    raise SystemExit(main())
