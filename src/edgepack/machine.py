"""What machine a result was measured on: CPU, ISA features, cores, OS and library versions.

Standard library only, so the lean runtime and the benchmark on a device can describe themselves.
"""

from __future__ import annotations

import os
import platform
from importlib import metadata

# ISA features that decide which int8/fp32 kernels the runtimes pick.
_X86_FLAGS = ("sse4_1", "avx", "avx2", "fma", "avx512f", "avx512bw", "avx512_vnni", "avx_vnni", "amx_int8")
_ARM_FLAGS = ("asimd", "asimddp", "i8mm", "sve", "sve2", "bf16", "sme")
_ARM_NAMES = {"asimd": "neon", "asimddp": "dotprod"}
LIBRARIES = (
    "edgepack", "numpy", "onnxruntime", "ai-edge-litert", "onnx", "tensorflow", "tf_keras",
    "tensorflow-model-optimization", "tf2onnx", "pillow",
)  # fmt: skip


def _cpuinfo() -> dict[str, str]:
    info: dict[str, str] = {}
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                key, sep, value = line.partition(":")
                if sep and key.strip() not in info:
                    info[key.strip()] = value.strip()
    except OSError:
        pass
    return info


def isa_features(cpuinfo: dict[str, str] | None = None) -> list[str]:
    """The ISA features of interest that this CPU reports (x86 'flags' or ARM 'Features')."""
    cpuinfo = _cpuinfo() if cpuinfo is None else cpuinfo
    flags = set((cpuinfo.get("flags") or cpuinfo.get("Features") or "").split())
    wanted = _X86_FLAGS if "flags" in cpuinfo else _ARM_FLAGS
    return [_ARM_NAMES.get(f, f) for f in wanted if f in flags]


def is_emulated() -> bool:
    """True when running under qemu user-mode emulation (edgepack's arm64 check sets these)."""
    if os.environ.get("EDGEPACK_EMULATED", "").lower() in ("1", "true", "yes"):
        return True
    return bool(os.environ.get("QEMU_LD_PREFIX") or os.environ.get("QEMU_CPU"))


def cpu_model(cpuinfo: dict[str, str] | None = None) -> str:
    cpuinfo = _cpuinfo() if cpuinfo is None else cpuinfo
    if "model name" in cpuinfo:
        return cpuinfo["model name"]
    if "CPU part" in cpuinfo:  # ARM: implementer/part ids, no marketing name
        emulated = os.environ.get("QEMU_CPU")
        base = f"ARM implementer {cpuinfo.get('CPU implementer', '?')} part {cpuinfo['CPU part']}"
        return f"{base} (qemu -cpu {emulated})" if emulated else base
    return platform.processor() or platform.machine()


def library_versions(names: tuple[str, ...] = LIBRARIES) -> dict[str, str]:
    versions = {}
    for name in names:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


def machine_info(label: str | None = None) -> dict:
    """The machine block written into manifests and results.json."""
    cpuinfo = _cpuinfo()
    return {
        "label": label or platform.node() or "unknown",
        "cpu_model": cpu_model(cpuinfo),
        "arch": platform.machine(),
        "isa": isa_features(cpuinfo),
        "cores": os.cpu_count(),
        "os": platform.platform(),
        "python": platform.python_version(),
        "libraries": library_versions(),
        "emulated": is_emulated(),
    }


GOVERNOR = "/sys/devices/system/cpu/cpu0/cpufreq/scaling_governor"


def machine_state(sample: float = 0.0) -> dict:
    """What may disturb a measurement right now: the 1/5/15-minute load averages and the CPU frequency governor
    (None where the system does not expose them, e.g. in many containers). With ``sample`` seconds, also
    ``other_cpu``: the cores that *other* processes kept busy during that many seconds (Linux /proc). The load
    average cannot say that: it is a one-minute average that counts this process and what it just ran (an
    export stage before the bench, a floor measurement)."""
    try:
        load = [round(v, 2) for v in os.getloadavg()]
    except OSError:
        load = None
    try:
        with open(GOVERNOR, encoding="utf-8") as f:
            governor = f.read().strip() or None
    except OSError:
        governor = None
    state = {"load_avg": load, "governor": governor}
    if sample > 0:
        state["other_cpu"] = other_cpu(sample)
    return state


def _cpu_ticks() -> tuple[int, int] | None:
    """(busy ticks of all CPUs, busy ticks of this process's threads) from /proc; None off Linux."""
    try:
        with open("/proc/stat", encoding="ascii") as f:
            fields = [int(v) for v in f.readline().split()[1:]]
        with open("/proc/self/stat", encoding="ascii") as f:
            own = f.read().rpartition(")")[2].split()  # after the command name, which may hold spaces
    except (OSError, ValueError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    busy = sum(fields[:8]) - idle  # user nice system idle iowait irq softirq steal; guest is inside user
    return busy, int(own[11]) + int(own[12])  # utime + stime of every thread of this process


def other_cpu(seconds: float = 1.0) -> float | None:
    """Cores kept busy by other processes over the next ``seconds`` (this process sleeps meanwhile): 0.0 on a
    quiet machine, about 1.0 beside one CPU-burning process. None where /proc is not readable."""
    import time

    first = _cpu_ticks()
    t0 = time.monotonic()
    time.sleep(seconds)
    second = _cpu_ticks()
    elapsed = time.monotonic() - t0
    if first is None or second is None or elapsed <= 0:
        return None
    hz = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
    others = (second[0] - first[0]) - (second[1] - first[1])
    return round(max(others, 0) / hz / elapsed, 2)
