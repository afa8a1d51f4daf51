"""The MCU step of the export stage: every int8 .tflite through TFLM, its arena, C bundle, LUT file and boards.

Called once by ``export.stage.export_stage`` after the files are made and verified. A mixed float/int8 file (the
host's latency plan kept an op float) is not what a microcontroller gets: ``twin(name)`` makes and verifies its
all-int8 sibling ``NAME-mcu`` through the export stage's own make/verify path, and that file goes to the boards.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from edgepack.errors import ConfigError
from edgepack.files import atomic_write_bytes, atomic_write_json, sha256_file
from edgepack.manifest import Artifact, RunDir
from edgepack.mcu import arena as _arena
from edgepack.mcu import cbundle, lut, tflm
from edgepack.mcu.boards import BOARDS, resolve
from edgepack.mcu.ops import read

log = logging.getLogger(__name__)


def tflm_version() -> str:
    import tflite_micro

    return str(tflite_micro.__version__)


def verify_content(content: bytes, what: str, x: np.ndarray, y: np.ndarray, litert_probs: np.ndarray,
                   out_scale: float, macs: int | None, boards: tuple[str, ...],
                   spec: Any = None) -> dict[str, Any]:  # fmt: skip
    """TFLM parity (against ``litert_probs`` of the same or the uncompressed file), the measured arena, flash and
    board fit of one all-int8 file; ConfigError (exit 2) for a file TFLM cannot or should not run."""
    facts = tflm.check_file(content, what)
    arena = _arena.measure(content)
    probs = tflm.run_images(
        content, x, arena["arena_bytes"], spec
    )  # the whole eval set with exactly the measured arena
    verdict = tflm.parity(probs, litert_probs, y, out_scale)
    fits = [BOARDS[b].fit(arena["recommended_bytes"], len(content)) for b in boards]
    estimates = [BOARDS[b].estimate(macs) for b in boards] if macs else []
    return {"ops": facts.op_set, "flash_bytes": len(content), "arena": arena, "parity": verdict,
            "boards": fits, "latency_estimates": estimates}  # fmt: skip


def mcu_stage(run: RunDir, artifacts: list[Artifact], boards: tuple[str, ...] | str, data: Any,
              twin: Callable[[str], Artifact]) -> list[Artifact]:  # fmt: skip
    """Verify every int8 .tflite of ``artifacts`` in TFLM (records ``metrics["tflm"]`` and the bundle's ``tflm``);
    returns ``artifacts`` plus any all-int8 twins made. A TFLM parity failure fails the artifact's parity gate."""
    boards = resolve(boards)
    version = tflm_version()
    labels = list(run.manifest["dataset"]["class_names"])
    out = list(artifacts)
    # twins (settings["mcu"]) are verified through the mixed file they stand in for
    for a in [a for a in artifacts if a.format == "tflite" and a.precision == "int8" and not a.settings.get("mcu")]:
        content = (run.path / a.path).read_bytes()
        facts = read(content)
        target = a
        if not facts.all_int8:
            target = twin(a.name)
            if target.name not in {o.name for o in out}:
                out.append(target)
            ins, outs = facts.io_types()
            _record(run, a, {"mcu_file": target.name, "mcu_path": target.path,
                             "reason": f"{a.name} is mixed for this host's latency ({facts.float_tensors} float "
                                       f"tensors, input {ins[0]}, output {outs[0]}); a microcontroller without a "
                                       f"vector FPU gets the all-int8 {target.name}"})  # fmt: skip
            content = (run.path / target.path).read_bytes()
        _record(run, target, _verify_target(run, target, content, data, boards, labels, version))
    run.manifest["mcu"] = {"tflm_version": version, "boards": [_board_row(BOARDS[b]) for b in boards],
                           "arena_margin": f"+{_arena.MARGIN_FRACTION:.0%} + {_arena.MARGIN_BYTES} bytes",
                           "ram_counts": "arena.h size (measured arena + margin) + the board's runtime RAM",
                           "flash_counts": "model bytes + the board's runtime flash"}  # fmt: skip
    from edgepack.mcu.report import board_files

    run.manifest["mcu"]["board_files"] = board_files(run.manifest)
    run.save()
    return out


def _verify_target(run: RunDir, a: Artifact, content: bytes, data: Any, boards: tuple[str, ...], labels: list[str],
                   version: str) -> dict[str, Any]:  # fmt: skip
    """``verify_file`` for an export artifact; a TFLM parity failure (its own or its LUT file's) fails the gate."""
    try:
        block = verify_file(run.path / a.path, content, data.x_test, data.y_test, a.metrics.get("macs"), boards,
                            labels, version, a.path, run.model_spec())  # fmt: skip
    except ConfigError as e:
        log.warning("%s", e)
        return {"supported": False, "refusal": str(e)}
    failures = list(block["parity"]["failures"]) + [f"LUT file: {f}" for f in block.get("lut", {}).get(
        "parity", {}).get("failures", [])]  # fmt: skip
    if failures:
        a.parity = {**(a.parity or {}), "passed": False, "failures": [*(a.parity or {}).get("failures", []), *failures]}
    return block


def verify_file(path: Path, content: bytes, x: np.ndarray, y: np.ndarray, macs: int | None, boards: tuple[str, ...],
                labels: list[str], version: str, what: str, spec: Any = None) -> dict[str, Any]:  # fmt: skip
    """TFLM parity, arena, flash, boards and the C bundle (NAME.tflm/ beside the file) of one all-int8 .tflite,
    and the same for its LUT-compressed sibling NAME-lut.tflite when its weights are clustered."""
    from edgepack.export.parity import run_file

    tflm.check_file(content, what)  # before any work: one line, exit 2
    litert, _ = run_file(path, x, spec)
    scale = tflm.output_scale(content)
    block = verify_content(content, what, x, y, litert, scale, macs, boards, spec)
    block["supported"] = True
    block["bundle"] = cbundle.write(path.with_name(f"{path.stem}.tflm"), content, what, block["ops"], block["arena"],
                                    labels, version)  # fmt: skip
    packed = lut.compress(content)
    if packed is not None:
        small, chosen = packed
        lut_path = path.with_name(f"{path.stem}-lut.tflite")
        lut_what = str(Path(what).with_name(lut_path.name))
        atomic_write_bytes(lut_path, small)
        lb = verify_content(small, lut_what, x, y, litert, scale, macs, boards, spec)
        lb.update(file=lut_what, sha256=sha256_file(lut_path), tensors=chosen,
                  flash_saved_bytes=len(content) - len(small), compared_with=f"LiteRT run of {what}",
                  note="decoded weights are placed in the arena: LUT saves flash and costs RAM")  # fmt: skip
        lb["bundle"] = cbundle.write(path.with_name(f"{lut_path.stem}.tflm"), small, lut_what, lb["ops"],
                                     lb["arena"], labels, version)  # fmt: skip
        block["lut"] = lb
    log.info("%s in TFLM: agreement with LiteRT %.4f, arena %d bytes, flash %d bytes", what,
             block["parity"]["top1_agreement"], block["arena"]["arena_bytes"], block["flash_bytes"])  # fmt: skip
    return block


def mcu_file(path: str | Path, boards: tuple[str, ...] | str | None = None,
             eval_path: str | Path | None = None) -> dict[str, Any]:  # fmt: skip
    """`edgepack mcu FILE`: ``verify_file`` for one .tflite, on an eval set (default: eval.npz beside the file)."""
    from edgepack.export.inspect import describe

    path = Path(path)
    boards = resolve(boards)
    if path.suffix != ".tflite" or not path.is_file():
        raise ConfigError(f"{path}: no such .tflite file; TFLM verifies .tflite files")
    content = path.read_bytes()
    tflm.check_file(content, str(path))
    ev_path = Path(eval_path) if eval_path else path.parent / "eval.npz"
    if not ev_path.is_file():
        raise ConfigError(f"{path}: no eval set at {ev_path}; give --eval FILE.npz (x: uint8 images, y: labels)")
    with np.load(ev_path) as ev:
        x, y = ev["x"], ev["y"]
        labels = (
            [str(c) for c in ev["class_names"]] if "class_names" in ev else [str(i) for i in range(int(y.max()) + 1)]
        )
    block = verify_file(path, content, x, y, describe(path)["macs"], boards, labels, tflm_version(), str(path))
    block["eval"] = str(ev_path)
    return block


def _record(run: RunDir, a: Artifact, block: dict[str, Any]) -> None:
    """Put ``block`` in the artifact's metrics and its bundle (NAME.json), and re-record the artifact."""
    a.metrics["tflm"] = block
    run.add_artifact(a)
    bundle = (run.path / a.path).with_suffix(".json")
    if bundle.is_file():
        doc = json.loads(bundle.read_text(encoding="utf-8"))
        doc["tflm"] = block
        doc["parity"] = a.parity
        atomic_write_json(bundle, doc)


def _board_row(b: Any) -> dict[str, Any]:
    return {"name": b.name, "title": b.title, "core": b.core, "mhz": b.mhz, "ram_bytes": b.ram_bytes,
            "flash_bytes": b.flash_bytes, "runtime_ram_bytes": b.runtime_ram_bytes,
            "runtime_flash_bytes": b.runtime_flash_bytes, "overhead_basis": b.overhead_basis, "note": b.note,
            "rate_source": b.rate.source if b.rate else None}  # fmt: skip


def require(settings: Any) -> None:
    """``--tflm`` asked for explicitly: tflite-micro must be installed and an int8 .tflite must be among the
    exports (TFLM verifies int8 files only); ConfigError (exit 2) otherwise, before any work."""
    from edgepack.mcu import tflm_available

    formats = [f.value for f in settings.formats]
    precisions = [p.value for p in settings.precisions]
    if "tflite" not in formats or "int8" not in precisions:
        raise ConfigError(f"--tflm with --formats {','.join(formats)} --precisions {','.join(precisions)}: TFLM "
                          "verifies int8 .tflite files only (float files do not go to a microcontroller); add "
                          "tflite to --formats and int8 to --precisions")  # fmt: skip
    if not tflm_available():
        raise ConfigError("--tflm: the tflite-micro package is not installed (x86_64 only); "
                          "pip install 'edgepack[train]' or pass --no-tflm")  # fmt: skip


def existing_twin(artifacts: list[Artifact], name: str) -> Artifact:
    """The all-int8 twin already exported for the mixed file ``name`` (re-verification makes no new files)."""
    twin = next((a for a in artifacts if a.name == f"{name}-mcu"), None)
    if twin is None:
        raise ConfigError(f"{name}: mixed float/int8 and its all-int8 twin {name}-mcu was not exported; rerun "
                          "`edgepack export` (not --verify-only) to make it")  # fmt: skip
    return twin
