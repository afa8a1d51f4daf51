"""Print a Linux-style /proc/cpuinfo for the CPU this (emulated) aarch64 process runs on.

Runs under qemu-aarch64 with the same ``-cpu`` as the check: qemu 7.2 shows the guest the host's x86
/proc/cpuinfo, on which the CPU detection inside onnxruntime and XNNPACK crashes. The ID comes from MIDR_EL1
(read with ``mrs``), the feature names from the AT_HWCAP / AT_HWCAP2 auxiliary-vector bits, so the file says
exactly what qemu emulates. Standard library only (it runs before any wheel is trusted).
"""

from __future__ import annotations

import ctypes
import mmap
import os

AT_HWCAP, AT_HWCAP2 = 16, 26
# Bit positions from the kernel's arch/arm64/include/uapi/asm/hwcap.h, names as /proc/cpuinfo prints them.
HWCAP_NAMES = (
    "fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm jscvt fcma lrcpc dcpop sha3 "
    "sm3 sm4 asimddp sha512 sve asimdfhm dit uscat ilrcpc flagm ssbs sb paca pacg"
).split()
HWCAP2_NAMES = (
    "dcpodp sve2 sveaes svepmull svebitperm svesha3 svesm4 flagm2 frint svei8mm svef32mm svef64mm svebf16 i8mm "
    "bf16 dgh rng bti mte ecv afp rpres mte3 sme sme_i16i64 sme_f64f64 sme_i8i32 sme_f16f32 sme_b16f32 "
    "sme_f32f32 sme_fa64 wfxt ebf16 sve_ebf16 cssc rprfm sve2p1 sme2 sme2p1 sme_i16i32 sme_bi32i32 sme_b16b16 "
    "sme_f16f16 mops hbc"
).split()
# mrs x0, midr_el1 ; ret
MIDR_CODE = (0xD5380000).to_bytes(4, "little") + (0xD65F03C0).to_bytes(4, "little")


def read_midr() -> int:
    """MIDR_EL1 of the (emulated) CPU, read by running two instructions from an executable page."""
    page = mmap.mmap(-1, mmap.PAGESIZE, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
    page.write(MIDR_CODE)
    address = ctypes.addressof(ctypes.c_char.from_buffer(page))
    midr = ctypes.CFUNCTYPE(ctypes.c_uint64)(address)()
    return int(midr)


def features() -> list[str]:
    libc = ctypes.CDLL(None)
    libc.getauxval.restype = ctypes.c_ulong
    libc.getauxval.argtypes = [ctypes.c_ulong]
    hwcap, hwcap2 = libc.getauxval(AT_HWCAP), libc.getauxval(AT_HWCAP2)
    names = [name for bit, name in enumerate(HWCAP_NAMES) if hwcap >> bit & 1]
    return names + [name for bit, name in enumerate(HWCAP2_NAMES) if hwcap2 >> bit & 1]


def cpuinfo_text(midr: int, feature_names: list[str], n_cpus: int) -> str:
    block = (
        "BogoMIPS\t: 50.00\n"
        f"Features\t: {' '.join(feature_names)}\n"
        f"CPU implementer\t: {midr >> 24 & 0xFF:#04x}\n"
        "CPU architecture: 8\n"
        f"CPU variant\t: {midr >> 20 & 0xF:#x}\n"
        f"CPU part\t: {midr >> 4 & 0xFFF:#05x}\n"
        f"CPU revision\t: {midr & 0xF}\n\n"
    )
    return "".join(f"processor\t: {i}\n{block}" for i in range(n_cpus))


if __name__ == "__main__":
    print(cpuinfo_text(read_midr(), features(), len(os.sched_getaffinity(0))), end="")
