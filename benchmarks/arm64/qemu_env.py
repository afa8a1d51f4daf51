"""Build, cache and run the emulated linux/aarch64 environment described in ../../ARM64 notes (docs/arm64.md).

Pieces, each cached under ``.arm64/`` in a folder named by a hash of its inputs, so a rerun only checks
that the folders exist:

- ``rootfs-KEY``: Debian bookworm arm64 with only python3 and libstdc++6, made by ``mmdebstrap
  --variant=extract`` (unpacks only: no arm64 code runs while building it) from the mirror lines this
  machine's apt uses, read at run time.
- ``py-KEY/site``: aarch64 wheels of the base install (pyproject ``dependencies``, pinned to the versions
  the host has, so host and guest run the same library code) plus pytest, fetched by the host's pip with
  ``--platform`` flags and installed with ``--target`` (an emulated process cannot start arm64 children
  without binfmt_misc, so pip cannot run inside). The project itself goes on PYTHONPATH as source.
- ``cpu-KEY/<cpu>``: one hard-linked copy of the root folder per ``-cpu`` with its own ``proc/cpuinfo``,
  generated under qemu with that same ``-cpu`` (qemu 7.2 shows the guest the host's x86 file, on which
  onnxruntime's and XNNPACK's CPU detection crash; a file that does not match the emulated CPU makes them pick
  kernels it cannot run). One copy per CPU lets the models run side by side without rewriting a shared file.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import tomllib

ROOT = Path(__file__).resolve().parents[2]
CACHE = ROOT / ".arm64"
HERE = Path(__file__).resolve().parent
QEMU = "qemu-aarch64-static"
# The three ARM int8 code paths a board may take: ARMv8.0 NEON, + dot product, + SVE2/i8mm.
# Never the bare "max": it advertises SME, and LiteRT int8 (XNNPACK) then gives wrong outputs under qemu 7.2.
CPUS = ("cortex-a53", "neoverse-n1", "max,sme=off")
SUITE = "bookworm"  # its python3 is 3.11, which the wheels below target
PYTHON_VERSION = "3.11"
PYTHON_WRAPPER = "usr/bin/python3-qemu"
CPU_ROOT_LAYOUT = 2  # bump when build_cpu_root writes something new, so cached roots are rebuilt
DEB_PACKAGES = ("python3", "libstdc++6")  # numpy's import needs libstdc++
APT_SOURCES = (Path("/etc/apt/sources.list.d/debian.sources"), Path("/etc/apt/sources.list"))
EXTRA_WHEELS = ("pytest",)  # to run the runtime's own tests under emulation
WHEEL_FLAGS = [
    "--only-binary=:all:",
    "--python-version", PYTHON_VERSION,
    "--implementation", "cp",
    "--abi", "cp311", "--abi", "abi3", "--abi", "none",
    "--platform", "manylinux2014_aarch64",
    *[arg for minor in range(17, 37) for arg in ("--platform", f"manylinux_2_{minor}_aarch64")],
]  # fmt: skip

Log = Callable[[str], None]


def _log(message: str) -> None:
    print(f"[arm64] {message}", file=sys.stderr, flush=True)


def _key(*parts: object) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:12]


def cpu_dirname(cpu: str) -> str:
    """A file-name-safe form of a ``-cpu`` value: 'max,sme=off' -> 'max_sme-off'."""
    return re.sub(r"[^A-Za-z0-9.-]", "_", cpu.replace("=", "-"))


# --------------------------------------------------------------------------------------------- inputs


def mirror_lines(paths: Sequence[Path] = APT_SOURCES) -> list[str]:
    """The one-line apt sources this machine uses, from deb822 ``.sources`` or a ``sources.list``.

    Read at run time so no mirror host is ever written into the project.
    """
    lines: list[str] = []
    for path in paths:
        if not path.is_file():
            continue
        text = path.read_text(encoding="utf-8")
        if path.suffix == ".sources":
            lines += _deb822_to_lines(text)
        else:
            lines += [ln.strip() for ln in text.splitlines() if ln.strip().startswith("deb ")]
    if not lines:
        raise RuntimeError(f"no apt sources found in {', '.join(map(str, paths))}: cannot build the arm64 root")
    return lines


def _deb822_to_lines(text: str) -> list[str]:
    lines = []
    for stanza in re.split(r"\n\s*\n", text):
        fields: dict[str, str] = {}
        for raw in stanza.splitlines():
            if not raw.strip() or raw.lstrip().startswith("#"):
                continue
            key, sep, value = raw.partition(":")
            if sep and not raw[0].isspace():
                fields[key.strip().lower()] = value.strip()
        if "deb" not in fields.get("types", "").split() or fields.get("enabled", "yes").lower() == "no":
            continue
        options = f"[signed-by={fields['signed-by']}] " if fields.get("signed-by", "").startswith("/") else ""
        for uri in fields.get("uris", "").split():
            for suite in fields.get("suites", "").split():
                lines.append(f"deb {options}{uri} {suite} {fields.get('components', 'main')}".strip())
    return lines


def base_requirements(pyproject: Path = ROOT / "pyproject.toml", extra: Sequence[str] = EXTRA_WHEELS) -> list[str]:
    """The base install's requirements, pinned to the version the host has when it has one.

    Same versions on both sides means a difference between x86 and aarch64 comes from the architecture,
    not from a library upgrade.
    """
    deps = tomllib.loads(pyproject.read_text(encoding="utf-8"))["project"]["dependencies"]
    out = []
    for spec in [*deps, *extra]:
        name = re.split(r"[<>=!~;\[ ]", spec, maxsplit=1)[0]
        try:
            out.append(f"{name}=={metadata.version(name)}")
        except metadata.PackageNotFoundError:
            out.append(spec)
    return out


def qemu_version() -> str:
    if shutil.which(QEMU) is None:
        raise RuntimeError(f"{QEMU} not found: run benchmarks/arm64/host_deps.sh (apt package qemu-user-static)")
    return subprocess.run([QEMU, "--version"], capture_output=True, text=True, check=True).stdout.splitlines()[0]


# --------------------------------------------------------------------------------------------- builders


def _build_dir(final: Path, fill: Callable[[Path], None]) -> Path:
    """Build a cache folder in a temporary sibling and rename it into place, so a failed build leaves nothing."""
    if final.is_dir():
        return final
    tmp = final.with_name(f".{final.name}.tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        fill(tmp)
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


def build_rootfs(cache: Path, log: Log = _log) -> Path:
    mirrors = mirror_lines()
    final = cache / f"rootfs-{_key(SUITE, DEB_PACKAGES, mirrors)}"

    def fill(tmp: Path) -> None:
        log(f"mmdebstrap arm64 {SUITE} ({', '.join(DEB_PACKAGES)}) from {len(mirrors)} apt source line(s)")
        tmp.rmdir()  # mmdebstrap wants to create (or find empty) its target
        cmd = ["mmdebstrap", "--variant=extract", "--mode=root", "--arch=arm64", "--quiet",
               f"--include={','.join(DEB_PACKAGES)}", SUITE, str(tmp), *mirrors]  # fmt: skip
        _run(cmd, "mmdebstrap")
        if not (tmp / "usr/bin/python3").exists():
            raise RuntimeError(f"mmdebstrap made no usr/bin/python3 in {tmp}")

    return _build_dir(final, fill)


def build_site(cache: Path, requirements: Sequence[str], log: Log = _log) -> Path:
    final = cache / f"py-{_key(PYTHON_VERSION, list(requirements), WHEEL_FLAGS)}"

    def fill(tmp: Path) -> None:
        log(f"pip download aarch64 wheels: {' '.join(requirements)}")
        pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "--quiet"]
        _run([*pip, "download", *WHEEL_FLAGS, "-d", str(tmp / "wheels"), *requirements], "pip download")
        wheels = sorted(str(p) for p in (tmp / "wheels").glob("*.whl"))
        log(f"pip install --target ({len(wheels)} wheels)")
        _run([*pip, "install", "--no-index", "--no-deps", *WHEEL_FLAGS, "--target", str(tmp / "site"), *wheels],
             "pip install --target")  # fmt: skip
        (tmp / "requirements.txt").write_text("\n".join(requirements) + "\n", encoding="utf-8")

    return _build_dir(final, fill) / "site"


def build_cpu_root(cache: Path, rootfs: Path, cpu: str, qemu: str, log: Log = _log) -> Path:
    final = cache / f"cpu-{_key(rootfs.name, qemu, CPU_ROOT_LAYOUT)}" / cpu_dirname(cpu)

    def fill(tmp: Path) -> None:
        tmp.rmdir()
        _run(["cp", "-al", str(rootfs), str(tmp)], "cp -al")  # hard links: ~0 bytes, well under a second
        # No proc/cpuinfo yet while generating it: the generator reads only MIDR_EL1 and the auxiliary vector.
        proc = subprocess.run(
            [QEMU, str(tmp / "usr/bin/python3"), "-I", str(HERE / "guest_cpuinfo.py")],
            env=_guest_env(tmp, cpu, pythonpath=[]), capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        if proc.returncode != 0 or "CPU part" not in proc.stdout:
            raise RuntimeError(f"generating /proc/cpuinfo under -cpu {cpu} failed: {proc.stderr.strip()[-400:]}")
        (tmp / "proc").mkdir(exist_ok=True)
        (tmp / "proc/cpuinfo").write_text(proc.stdout, encoding="utf-8")
        # Without binfmt_misc an emulated process cannot exec an arm64 binary. The guest's sys.executable is
        # made to be this host shell script (QEMU_ARGV0), which starts the child under qemu with the inherited
        # QEMU_CPU / QEMU_LD_PREFIX: tests and `edgepack bench` that spawn `sys.executable` then work.
        wrapper = tmp / PYTHON_WRAPPER
        wrapper.write_text(f'#!/bin/sh\nexec {shutil.which(QEMU)} "{final}/usr/bin/python3" "$@"\n', encoding="utf-8")
        wrapper.chmod(0o755)
        features = next(ln for ln in proc.stdout.splitlines() if ln.startswith("Features")).split(":", 1)[1]
        log(f"-cpu {cpu}: {len(features.split())} features ({_interesting(features)})")

    return _build_dir(final, fill)


def _interesting(features: str) -> str:
    shown = [f for f in ("asimd", "asimddp", "sve", "sve2", "i8mm", "bf16", "sme") if f in features.split()]
    return " ".join(shown)


def _run(cmd: list[str], what: str) -> None:
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip()[-1500:]
        raise RuntimeError(f"{what} failed (exit {proc.returncode}): {tail}")


# --------------------------------------------------------------------------------------------- running


def _guest_env(root: Path, cpu: str, pythonpath: Sequence[Path]) -> dict[str, str]:
    env = {
        "QEMU_CPU": cpu,  # always pinned: see CPUS
        "QEMU_LD_PREFIX": str(root),
        "QEMU_ARGV0": str(root / PYTHON_WRAPPER),  # the guest's sys.executable: see build_cpu_root
        "EDGEPACK_EMULATED": "1",  # edgepack.machine.is_emulated() marks results from this run
        "PATH": "/usr/bin:/bin",
        "HOME": os.environ.get("HOME", "/root"),
        "LANG": "C.UTF-8",
        "PYTHONNOUSERSITE": "1",
        "PYTHONPATH": os.pathsep.join(str(p) for p in pythonpath),
    }
    return env


@dataclass(frozen=True)
class Arm64Env:
    """A built environment: the per-CPU root folders and the aarch64 site-packages."""

    roots: dict[str, Path]
    site: Path
    qemu: str
    requirements: tuple[str, ...]

    def env(self, cpu: str) -> dict[str, str]:
        return _guest_env(self.roots[cpu], cpu, [ROOT / "src", self.site])

    def command(self, cpu: str, args: Sequence[str]) -> list[str]:
        """argv that runs ``python3 ARGS`` as aarch64 under ``-cpu CPU`` (use with ``env=self.env(cpu)``)."""
        return [QEMU, str(self.roots[cpu] / "usr/bin/python3"), *args]

    def run(self, cpu: str, args: Sequence[str], **kwargs) -> subprocess.CompletedProcess:
        return subprocess.run(self.command(cpu, args), env=self.env(cpu), **kwargs)


def build(cpus: Sequence[str] = CPUS, cache: Path = CACHE, log: Log = _log) -> Arm64Env:
    """Build what is missing (cold: about a minute, mostly the wheel download) and return the environment."""
    t0 = time.perf_counter()
    qemu = qemu_version()
    cache.mkdir(parents=True, exist_ok=True)
    rootfs = build_rootfs(cache, log)
    requirements = base_requirements()
    site = build_site(cache, requirements, log)
    roots = {cpu: build_cpu_root(cache, rootfs, cpu, qemu, log) for cpu in cpus}
    log(f"environment ready in {time.perf_counter() - t0:.1f} s ({qemu}; cache {cache})")
    return Arm64Env(roots=roots, site=site, qemu=qemu, requirements=tuple(requirements))


if __name__ == "__main__":
    built = build()
    smoke = "import numpy, onnxruntime, ai_edge_litert.interpreter as l, platform; print(platform.machine(), numpy.__version__, onnxruntime.__version__)"
    for cpu in built.roots:
        t = time.perf_counter()
        out = built.run(cpu, ["-c", smoke], capture_output=True, text=True)
        print(
            f"{cpu:14s} exit {out.returncode} {time.perf_counter() - t:5.1f}s {out.stdout.strip()} {out.stderr.strip()[-300:]}"
        )
