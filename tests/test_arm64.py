"""The arm64 check (benchmarks/arm64): the emulated aarch64 environment and the x86-vs-aarch64 comparison.

Tests marked ``arm64`` run the lean runtime as linux/aarch64 under qemu-aarch64-static (`make arm64-check`
installs it; `benchmarks/arm64/host_deps.sh` alone does too). The first one builds the cached environment in
.arm64/ (about half a minute), later ones reuse it.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edgepack.files import sha256_file
from edgepack.machine import cpu_model, isa_features

ROOT = Path(__file__).resolve().parents[1]
ARM64 = ROOT / "benchmarks" / "arm64"
FIX = ROOT / "tests" / "fixtures" / "runtime"
DIGITS = ["digits-onnx-fp32", "digits-onnx-int8", "digits-tflite-fp32", "digits-tflite-int8"]

HAS_QEMU = shutil.which("qemu-aarch64-static") is not None and shutil.which("mmdebstrap") is not None
needs_qemu = pytest.mark.skipif(
    not HAS_QEMU, reason="qemu-aarch64-static or mmdebstrap missing: run benchmarks/arm64/host_deps.sh (as root)"
)


def _module(name: str):
    spec = importlib.util.spec_from_file_location(f"arm64_{name}", ARM64 / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def _parse_cpuinfo(text: str) -> dict[str, str]:
    info: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip() not in info:
            info[key.strip()] = value.strip()
    return info


@pytest.fixture
def digits_export(tmp_path) -> Path:
    """An export folder holding the four digits fixture bundles and their eval set."""
    export = tmp_path / "export"
    export.mkdir()
    for path in FIX.iterdir():
        if path.name == "eval.npz" or path.stem in DIGITS:
            shutil.copy(path, export / path.name)
    return export


def _check(*args: str | Path) -> subprocess.CompletedProcess:
    cmd = [sys.executable, str(ARM64 / "check.py"), *map(str, args)]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=ROOT)


# -- no emulation needed ----------------------------------------------------------------------------


def test_deb822_sources_become_one_apt_line_per_uri_and_suite(tmp_path):
    sources = tmp_path / "debian.sources"
    sources.write_text(
        "Types: deb\n# a comment\nURIs: http://mirror.invalid/debian\nSuites: bookworm bookworm-updates\n"
        "Components: main contrib\nSigned-By: /usr/share/keyrings/k.gpg\n\n"
        "Types: deb-src\nURIs: http://mirror.invalid/debian\nSuites: bookworm\nComponents: main\n"
    )
    lines = _module("qemu_env").mirror_lines([sources])
    assert lines == [
        "deb [signed-by=/usr/share/keyrings/k.gpg] http://mirror.invalid/debian bookworm main contrib",
        "deb [signed-by=/usr/share/keyrings/k.gpg] http://mirror.invalid/debian bookworm-updates main contrib",
    ]


def test_generated_cpuinfo_reads_back_as_the_emulated_cpu_id_and_features():
    guest = _module("guest_cpuinfo")
    # Neoverse-N1 r3p1: implementer 0x41 (Arm), variant 3, part 0xd0c, revision 1.
    text = guest.cpuinfo_text(0x413FD0C1, ["fp", "asimd", "asimddp", "i8mm"], n_cpus=2)
    info = _parse_cpuinfo(text)
    assert text.count("processor\t:") == 2
    assert (info["CPU implementer"], info["CPU variant"], info["CPU part"], info["CPU revision"]) == (
        "0x41", "0x3", "0xd0c", "1",
    )  # fmt: skip
    assert isa_features(info) == ["neon", "dotprod", "i8mm"]
    assert "part 0xd0c" in cpu_model(info)


def test_base_requirements_pin_the_host_versions_and_add_pytest():
    from importlib import metadata

    reqs = _module("qemu_env").base_requirements()
    assert f"numpy=={metadata.version('numpy')}" in reqs
    assert f"onnxruntime=={metadata.version('onnxruntime')}" in reqs
    assert any(r.startswith("pytest") for r in reqs)
    assert not any(r.lower().startswith(("tensorflow", "tf_keras")) for r in reqs)


def test_check_without_an_export_folder_exits_2_with_one_line(tmp_path):
    out = _check(tmp_path)
    assert out.returncode == 2
    assert out.stderr.strip().count("\n") == 0
    assert "no export/eval.npz" in out.stderr


# -- under emulation --------------------------------------------------------------------------------


@pytest.mark.arm64
@needs_qemu
def test_every_fixture_file_agrees_with_x86_under_all_three_cpu_models_and_runs_are_marked_emulated(
    digits_export, tmp_path
):
    rows_json = tmp_path / "rows.json"
    out = _check(digits_export.parent, "--tests", "", "--bench-cpu", "", "--json", rows_json)
    assert out.returncode == 0, out.stdout + out.stderr
    rows = json.loads(rows_json.read_text())
    assert {(r["cpu"], r["file"]) for r in rows} == {
        (cpu, f) for cpu in ("cortex-a53", "neoverse-n1", "max,sme=off") for f in DIGITS
    }
    for r in rows:
        assert r["passed"], r
        assert r["same_labels"] == r["n"] == 64
        if r["precision"] == "fp32":
            assert r["max_abs_diff"] <= 1e-5
    assert out.stdout.count("(emulated)") == 3
    # Each model exposes its own int8 path (what the generated /proc/cpuinfo says), and never SME.
    assert "cortex-a53   aarch64 isa=neon (emulated)" in out.stdout
    assert "neoverse-n1  aarch64 isa=neon,dotprod (emulated)" in out.stdout
    assert "max,sme=off  aarch64 isa=neon,dotprod,i8mm,sve,sve2,bf16 (emulated)" in out.stdout


@pytest.mark.arm64
@needs_qemu
def test_check_catches_a_file_altered_after_the_x86_reference_was_taken(digits_export, tmp_path):
    onnx = pytest.importorskip("onnx")
    from onnx import numpy_helper

    reference, rows_json = tmp_path / "x86", tmp_path / "rows.json"
    args = [
        "--cpus",
        "cortex-a53",
        "--files",
        "digits-onnx-fp32",
        "--tests",
        "",
        "--bench-cpu",
        "",
        "--reference",
        reference,
    ]
    first = _check(digits_export.parent, *args)
    assert first.returncode == 0, first.stdout + first.stderr

    # Re-export behind the check's back: scale the largest weight tensor by 1.5, bundle hash updated to match.
    model_path = digits_export / "digits-onnx-fp32.onnx"
    model = onnx.load(model_path)
    weight = max(model.graph.initializer, key=lambda t: np.prod(t.dims))
    weight.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(weight) * 1.5, weight.name))
    onnx.save(model, model_path)
    bundle_path = digits_export / "digits-onnx-fp32.json"
    bundle = json.loads(bundle_path.read_text())
    bundle["sha256"] = sha256_file(model_path)
    bundle_path.write_text(json.dumps(bundle))

    second = _check(digits_export.parent, *args, "--json", rows_json)
    assert second.returncode == 1, second.stdout + second.stderr
    (row,) = json.loads(rows_json.read_text())
    assert not row["passed"]
    assert row["max_abs_diff"] > 1e-3
    assert "FAIL" in second.stdout
    assert "arm64 check FAILED: 0/1" in second.stdout


@pytest.mark.arm64
@needs_qemu
def test_emulated_bench_with_the_base_install_is_marked_emulated_and_report_merges_it_with_x86(digits_export, tmp_path):
    qemu_env = _module("qemu_env")
    environment = qemu_env.build(["cortex-a53"])
    bundle = digits_export / "digits-tflite-int8.json"
    quick = ["--threads", "1", "--batch", "1", "--min-time", "0.02", "--windows", "1", "--quiet"]
    arm, x86, report = tmp_path / "arm.json", tmp_path / "x86.json", tmp_path / "report.md"

    emulated = environment.run("cortex-a53", ["-m", "edgepack", "bench", str(bundle), *quick, "--label", "qemu-a53",
                                              "--out", str(arm)], capture_output=True, text=True, timeout=300)  # fmt: skip
    assert emulated.returncode == 0, emulated.stderr[-2000:]
    host = [sys.executable, "-m", "edgepack"]
    assert subprocess.run([*host, "bench", str(bundle), *quick, "--label", "x86", "--out", str(x86)]).returncode == 0
    merged = subprocess.run([*host, "report", str(x86), str(arm), "--out", str(report)], capture_output=True, text=True)

    results = json.loads(arm.read_text())
    assert results["machine"]["emulated"] is True
    assert results["machine"]["arch"] == "aarch64"
    assert "tensorflow" not in results["machine"]["libraries"]  # the base install only
    assert [r["artifact"] for r in results["results"]] == ["digits-tflite-int8"]
    assert json.loads(x86.read_text())["machine"]["emulated"] is False
    assert merged.returncode == 0, merged.stderr
    text = report.read_text()
    assert "qemu-a53" in text
    assert "x86" in text
    assert "EMULATED" in text
