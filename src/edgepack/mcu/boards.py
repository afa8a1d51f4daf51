"""Real boards a TFLM model is built for: RAM, flash, runtime overheads, and a latency *estimate*.

Standard library only: the recipe validates ``--board`` names against this table before anything loads.

RAM and flash are the chip's (datasheet). The runtime overheads are stated assumptions, not measurements: what
the firmware around the model needs besides the arena and the model bytes (TFLM interpreter code, the kernels of
a small CNN with CMSIS-NN, start-up code, stack and the OS/SDK the board's usual toolchain brings).

Latency estimates are MACs divided by the multiply-add rate that a published MLPerf Tiny result implies (its
model's MACs / its median latency), on that board and runtime or, where labelled, scaled by clock from the same
core. They are estimates with their source, never measurements, and are shown apart from measured rows.
"""

from __future__ import annotations

from dataclasses import dataclass

from edgepack.errors import ConfigError

KIB = 1024
RESNET8_MACS = 12_500_000  # MLPerf Tiny image classification (ResNet-8, CIFAR-10): 12.5 M multiply-adds


@dataclass(frozen=True)
class Rate:
    """Multiply-adds per second implied by one published result (or derived from one by clock)."""

    macs_per_s: float
    runtime: str
    source: str


# MLPerf Tiny v0.5 closed, "reference" submission, Nucleo-L4R5ZI, TFLM v2.3.1: image classification 1.420 inf./s
# (100 inferences in 70.425 s per window) -> 704.3 ms for 12.5 M MACs.
_L4R5_TFLM = Rate(RESNET8_MACS / 0.70425, "TFLM v2.3.1",
                  "MLPerf Tiny v0.5 closed/reference Nucleo-L4R5ZI image classification: 1.420 inf./s (704 ms) "
                  "for ResNet-8's 12.5 M MACs")  # fmt: skip
# MLPerf Tiny v1.0 closed, STMicroelectronics, NUCLEO-H7A3ZI-Q at 280 MHz, X-CUBE-AI v7.3.0: 18.401 inf./s (54.3 ms).
_H7A3_XCUBE = Rate(RESNET8_MACS * 18.401, "X-CUBE-AI v7.3.0 (not TFLM: TFLM is slower)",
                   "MLPerf Tiny v1.0 closed/STMicroelectronics NUCLEO-H7A3ZI-Q image classification: 18.401 inf./s "
                   "(54.3 ms) for ResNet-8's 12.5 M MACs")  # fmt: skip


@dataclass(frozen=True)
class Board:
    name: str
    title: str
    core: str
    mhz: int
    ram_bytes: int
    flash_bytes: int
    runtime_ram_bytes: int  # besides the arena: stack, interpreter object, globals, OS/SDK
    runtime_flash_bytes: int  # besides the model: TFLM + kernels + start-up + OS/SDK
    overhead_basis: str
    rate: Rate | None
    note: str = ""

    def fit(self, arena_bytes: int, model_bytes: int) -> dict:
        """RAM = arena + runtime RAM, flash = model + runtime flash, and whether both fit this board."""
        ram = arena_bytes + self.runtime_ram_bytes
        flash = model_bytes + self.runtime_flash_bytes
        return {"board": self.name, "ram_bytes": ram, "ram_capacity": self.ram_bytes, "flash_bytes": flash,
                "flash_capacity": self.flash_bytes, "ram_fits": ram <= self.ram_bytes,
                "flash_fits": flash <= self.flash_bytes, "fits": ram <= self.ram_bytes and flash <= self.flash_bytes,
                "ram_pct": round(100 * ram / self.ram_bytes, 1), "flash_pct": round(100 * flash / self.flash_bytes, 1)}  # fmt: skip

    def estimate(self, macs: int) -> dict:
        """Latency estimate from ``macs`` and the board's published rate (None with a reason when there is none)."""
        if self.rate is None:
            return {"board": self.name, "latency_ms_estimate": None, "kind": "estimate",
                    "source": f"no published MLPerf Tiny result for {self.core} to derive a rate from"}  # fmt: skip
        return {"board": self.name, "latency_ms_estimate": round(1000 * macs / self.rate.macs_per_s, 2),
                "kind": "estimate", "runtime": self.rate.runtime,
                "macs_per_s": round(self.rate.macs_per_s), "source": self.rate.source}  # fmt: skip


_CORTEX_M = "TFLM + CMSIS-NN kernels of a small CNN + start-up ~64 KiB flash; stack + interpreter + globals ~8 KiB RAM"

BOARDS: dict[str, Board] = {
    b.name: b
    for b in (
        Board("nano33ble", "Arduino Nano 33 BLE Sense (nRF52840)", "Cortex-M4F", 64, 256 * KIB, 1024 * KIB,
              52 * KIB, 144 * KIB, _CORTEX_M + "; plus the Arduino Mbed OS core (~44 KiB RAM, ~80 KiB flash)",
              Rate(_L4R5_TFLM.macs_per_s * 64 / 120, "TFLM v2.3.1",
                   _L4R5_TFLM.source + ", scaled by clock 64/120 MHz (same Cortex-M4F core)")),
        Board("stm32l4r5zi", "STM32L4R5ZI (NUCLEO-L4R5ZI)", "Cortex-M4F", 120, 640 * KIB, 2048 * KIB,
              8 * KIB, 64 * KIB, _CORTEX_M + " (bare metal)", _L4R5_TFLM),
        Board("stm32h7a3zi", "STM32H7A3ZI-Q (NUCLEO-H7A3ZI-Q)", "Cortex-M7", 280, 1184 * KIB, 2048 * KIB,
              8 * KIB, 64 * KIB, _CORTEX_M + " (bare metal)", _H7A3_XCUBE,
              "RAM: the 1.18 MB of user SRAM (TCM not counted)"),
        Board("esp32s3", "ESP32-S3 (ESP32-S3-DevKitC-1-N8, 8 MB flash)", "Xtensa LX7", 240, 512 * KIB, 8192 * KIB,
              64 * KIB, 256 * KIB, "ESP-IDF + FreeRTOS base image ~200 KiB flash and ~56 KiB RAM, plus TFLM "
              "(esp-nn kernels) ~56 KiB flash and ~8 KiB RAM", None),
        Board("rp2040", "Raspberry Pi Pico (RP2040)", "Cortex-M0+", 133, 264 * KIB, 2048 * KIB,
              8 * KIB, 64 * KIB, _CORTEX_M + " (pico-sdk, bare metal; M0+ has no DSP extension)", None),
    )
}  # fmt: skip


def resolve(names: str | tuple[str, ...] | list[str] | None) -> tuple[str, ...]:
    """Board names from ``all``, one name or a comma list; unknown names are a ConfigError (exit 2)."""
    if names is None:
        return tuple(BOARDS)
    if isinstance(names, str):
        names = [n for n in names.split(",") if n.strip()]
    names = [str(n).strip().lower() for n in names]
    if not names:
        raise ConfigError(f"--board: got an empty list; choose all or from {', '.join(BOARDS)}")
    out: list[str] = []
    for n in names:
        if n == "all":
            out += list(BOARDS)
        elif n in BOARDS:
            out.append(n)
        else:
            raise ConfigError(f"--board {n}: unknown board; choose all or from {', '.join(BOARDS)}")
    return tuple(dict.fromkeys(out))
