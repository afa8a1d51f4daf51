"""The arm64 check: every exported file of a run, through the lean runtime, as linux/aarch64 under qemu.

For each emulated CPU model (cortex-a53: ARMv8.0 NEON; neoverse-n1: + dot product; max,sme=off: + SVE2/i8mm,
the three ARM int8 code paths) it runs ``edgepack.runtime`` on ``export/eval.npz`` for every bundle and
compares with the same script run on this x86 host: float files must agree within ``FLOAT_ATOL``, quantized
files must give identical labels (the largest probability difference is reported too). Then it runs the
runtime's own tests under emulation. Prints a per-CPU x per-file table; exit 1 on any mismatch, crash or test
failure, 2 on bad input.

    python benchmarks/arm64/check.py RUN_DIR [--cpus cortex-a53,neoverse-n1] [--reference DIR]

Emulated timings say nothing about ARM speed and are not shown as such: real boards run ``edgepack bench``
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
# The runtime's tests take ~100 s per CPU model under emulation (its 8-thread x 1000-prediction test most of
# it): one model keeps the whole check inside its 5-minute budget; the file comparison covers all three.
TEST_CPUS = "cortex-a53"
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
    parser.add_argument("--jobs", type=int, default=min(3, os.cpu_count() or 1), help="CPU models run at once")
    parser.add_argument("--json", type=Path, default=None, help="also write the rows as JSON to this file")
    args = parser.parse_args(argv)

    t_start = time.perf_counter()
    cpus = [c for c in args.cpus.split(",") if c]
    # "max,sme=off" contains a comma: re-join a bare option with the model before it.
    cpus = _join_cpu_options(cpus)
    if not cpus:
        print(
            f"--cpus {args.cpus!r}: give at least one qemu -cpu model, e.g. {','.join(arm64env.CPUS)}", file=sys.stderr
        )
        return 2
    try:
        export = export_dir_of(args.run_dir)
        sys.path.insert(0, str(arm64env.ROOT / "src"))
        from predict_all import bundles

        files = [p.stem for p in bundles(export, [f for f in args.files.split(",") if f] or None)]
    except SystemExit as exc:
        print(exc, file=sys.stderr)
        return 2
    if not files:
        print(f"{export}: no bundles (NAME.json beside an exported model); nothing to check", file=sys.stderr)
        return 2

    test_cpus = cpus if args.test_cpus == "all" else _join_cpu_options(args.test_cpus.split(","))
    environment = arm64env.build(list(dict.fromkeys([*cpus, *test_cpus])) if args.tests else cpus)
    t_env = time.perf_counter() - t_start
    work = Path(tempfile.mkdtemp(prefix="check-", dir=arm64env.CACHE))
    tests = None
    try:
        ref_dir = args.reference or work / "x86"
        if not (ref_dir / "status.jsonl").exists():
            _log(f"x86 reference: {len(files)} file(s) on this host")
            cmd = [sys.executable, str(PREDICT), str(export), str(ref_dir), "--files", *files]
            subprocess.run(cmd, env=host_env(), check=True, capture_output=True)
        else:
            _log(f"x86 reference: reusing {ref_dir}")

        tests = _start_runtime_tests(environment, test_cpus, args.tests, work) if args.tests else None
        exit_codes, walls, machines = _run_emulated(environment, cpus, export, files, work, args.jobs)
        rows = [row for cpu in cpus
                for row in compare(cpu, files, ref_dir, work / arm64env.cpu_dirname(cpu), exit_codes[cpu])]  # fmt: skip
        print()
        for cpu in cpus:
            m = machines.get(cpu, {})
            flag = "emulated" if m.get("emulated") else "NOT MARKED EMULATED"
            print(f"-cpu {cpu:12s} {m.get('arch', '?')} isa={','.join(m.get('isa', [])) or '?'} ({flag}); "
                  f"wall {walls[cpu]:.0f} s under emulation (not ARM speed)")  # fmt: skip
        print()
        print_table(rows)
        machine_ok = all(machines.get(cpu, {}).get("emulated") is True for cpu in cpus)

        tests_ok = _finish_runtime_tests(tests, args.tests) if tests is not None else True
    finally:
        for proc, _ in (tests or {}).get("procs", {}).values():
            if proc.poll() is None:  # interrupted: leave no emulated process behind
                proc.kill()
                proc.wait()
        shutil.rmtree(work, ignore_errors=True)

    n_fail = sum(not r.passed for r in rows)
    if args.json:
        args.json.write_text(json.dumps([r.__dict__ for r in rows], indent=1), encoding="utf-8")
    ok = n_fail == 0 and tests_ok and machine_ok
    print(f"\narm64 check {'passed' if ok else 'FAILED'}: {len(rows) - n_fail}/{len(rows)} file x CPU agree"
          f"{'' if tests_ok else '; runtime tests failed'}{'' if machine_ok else '; a run was not marked emulated'}"
          f" (environment {t_env:.0f} s, total {time.perf_counter() - t_start:.0f} s)")  # fmt: skip
    return 0 if ok else 1


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


def _run_emulated(environment, cpus, export, files, work, jobs):
    """predict_all.py under each -cpu, ``jobs`` at a time; returns exit codes, wall seconds, machine blocks."""
    exit_codes: dict[str, int] = {}
    walls: dict[str, float] = {}
    machines: dict[str, dict] = {}
    pending = list(cpus)
    running: dict[str, tuple[subprocess.Popen, float, object]] = {}
    while pending or running:
        while pending and len(running) < max(1, jobs):
            cpu = pending.pop(0)
            out_dir = work / arm64env.cpu_dirname(cpu)
            out_dir.mkdir(parents=True)
            log = open(out_dir / "log.txt", "wb")  # noqa: SIM115 - closed when the process ends
            cmd = environment.command(cpu, [str(PREDICT), str(export), str(out_dir), "--files", *files])
            _log(f"-cpu {cpu}: {len(files)} file(s) under emulation")
            running[cpu] = (
                subprocess.Popen(cmd, env=environment.env(cpu), stdout=log, stderr=log),
                time.perf_counter(),
                log,
            )
        time.sleep(0.2)
        for cpu, (proc, t0, log) in list(running.items()):
            if proc.poll() is None and time.perf_counter() - t0 < GUEST_TIMEOUT_S:
                continue
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            log.close()
            exit_codes[cpu], walls[cpu] = proc.returncode, time.perf_counter() - t0
            out_dir = work / arm64env.cpu_dirname(cpu)
            if (out_dir / "machine.json").exists():
                machines[cpu] = json.loads((out_dir / "machine.json").read_text(encoding="utf-8"))
            if proc.returncode != 0:
                tail = (out_dir / "log.txt").read_text(encoding="utf-8", errors="replace").strip()[-800:]
                _log(f"-cpu {cpu}: exit {proc.returncode}\n{tail}")
            del running[cpu]
    return exit_codes, walls, machines


def _start_runtime_tests(environment, cpus, pattern, out_dir: Path) -> dict:
    """Start the runtime's own tests (base install only, no TensorFlow) under each -cpu, in the background.

    They run beside the file comparison: most of an emulated run is one busy thread, and the machine has two.
    """
    tests = sorted(str(p.relative_to(arm64env.ROOT)) for p in arm64env.ROOT.glob(pattern))
    args = ["-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", "not slow and not arm64", *tests]
    started = {"tests": tests, "procs": {}}
    for cpu in cpus if tests else []:
        _log(f"-cpu {cpu}: runtime tests under emulation ({' '.join(tests)})")
        log = open(out_dir / f"pytest-{arm64env.cpu_dirname(cpu)}.txt", "w+")  # noqa: SIM115 - read back and closed in _finish
        proc = subprocess.Popen(environment.command(cpu, args), env=environment.env(cpu), cwd=arm64env.ROOT,
                                stdout=log, stderr=subprocess.STDOUT)  # fmt: skip
        started["procs"][cpu] = (proc, log)
    return started


def _finish_runtime_tests(started: dict, pattern: str) -> bool:
    """Wait for the runtime tests; one line per CPU model (the failing output in full). False if any failed."""
    if not started["tests"]:
        print(f"\nruntime tests: nothing matches {pattern}: FAIL")
        return False
    print(f"\nruntime tests under emulation ({' '.join(started['tests'])}):")
    ok = True
    for cpu, (proc, log) in started["procs"].items():
        try:
            proc.wait(timeout=GUEST_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.seek(0)
        out = log.read().strip()
        log.close()
        last = [ln for ln in out.splitlines() if ln.strip()][-1:] or ["(no output)"]
        print(f"  -cpu {cpu:12s} exit {proc.returncode}: {last[0]}")
        if proc.returncode != 0:
            ok = False
            print("    " + "\n    ".join(out.splitlines()[-40:]))
    return ok


if __name__ == "__main__":
    raise SystemExit(main())
