"""Fuzz the lean runtime with damaged model files: none may take the process down.

For each format, COUNT damaged copies of the fixture models (bit flips, truncations, zeroed ranges, random
headers, overwritten chunks, and structure-aware damage: bit flips and 32-bit values such as 0, -1, 2^31 written
outside the weight data, where shapes, tensor indices, offsets and op codes live) are each loaded and run in a forked child process with
``edgepack.runtime.load(copy, threads=1).predict(images)``. A child must either return finite probabilities
or raise ``ModelLoadError`` with a one-line message; a signal (crash), a hang, another exception or
non-finite output is a failure. Exit 0 only with no failures.

    PYTHONPATH=src python benchmarks/fuzz_runtime.py                 # 2000 per format (the acceptance run)
    PYTHONPATH=src python benchmarks/fuzz_runtime.py --count 200     # the CI-sized run (tests/test_runtime.py)

The damaged copies are bare model files (no bundle beside them): with a bundle, the sha256 check would reject
every one of them before the structural checks and the engine are reached.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import select
import signal
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "tests" / "fixtures" / "runtime"
SOURCES = {"tflite": ["digits-tflite-fp32.tflite", "digits-tflite-int8.tflite", "binary-tflite-int8.tflite"],
           "onnx": ["digits-onnx-fp32.onnx", "digits-onnx-int8.onnx", "binary-onnx-fp32.onnx"]}  # fmt: skip
MUTATIONS = ("bitflip", "truncate", "zero_range", "random_header", "overwrite_chunk", "meta_bitflip", "meta_int")
# Values a damaged 32-bit field (a shape, an index, an offset, a count) is most likely to break things with.
INTERESTING = (0, 1, 2, 3, 7, 255, 256, 0xFFFF, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFF, 0xFFFFFFFE, 0x10000000)
OK, LOAD_ERROR, OTHER_ERROR, NON_FINITE, BAD_MESSAGE = 0, 10, 11, 12, 13


def weight_ranges(fmt: str, data: bytes) -> list[tuple[int, int]]:
    """(start, end) of the constant tensor data in a model file: the rest is structure (shapes, indices, ops)."""
    if fmt == "tflite":
        from ai_edge_litert import schema_py_generated as schema

        model = schema.Model.GetRootAsModel(data, 0)
        ranges = []
        for i in range(model.BuffersLength()):
            buf = model.Buffers(i)
            if buf.DataLength():
                start = buf._tab.Vector(buf._tab.Offset(4))
                ranges.append((start, start + buf.DataLength()))
        return ranges
    return _protobuf_ranges(data, 0, len(data), path=())


def _protobuf_ranges(data: bytes, pos: int, end: int, path: tuple[int, ...]) -> list[tuple[int, int]]:
    """raw_data/float_data of ONNX tensors (ModelProto.graph=7 > initializer=5 or node=1 > attribute=5 > t=5)."""
    ranges: list[tuple[int, int]] = []
    descend = {(): {7}, (7,): {1, 5}, (7, 1): {5}, (7, 1, 5): {5}}  # where tensors live
    for field, start, stop in _fields(data, pos, end):
        if path in ((7,), (7, 1, 5)) and field == 5:  # a TensorProto: float_data (packed) = 4, raw_data = 9
            ranges += [(s, e) for f, s, e in _fields(data, start, stop) if f in (4, 9)]
        elif field in descend.get(path, set()):
            ranges += _protobuf_ranges(data, start, stop, (*path, field))
    return ranges


def _fields(data: bytes, pos: int, end: int):
    """(field number, start, stop) of each length-delimited field in data[pos:end]; other wire types skipped."""
    while pos < end:
        key, pos = _varint(data, pos)
        field, wire = key >> 3, key & 7
        if wire == 0:
            _, pos = _varint(data, pos)
        elif wire == 1:
            pos += 8
        elif wire == 5:
            pos += 4
        elif wire == 2:
            length, pos = _varint(data, pos)
            yield field, pos, pos + length
            pos += length
        else:
            return


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    value, shift = 0, 0
    while True:
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if byte < 0x80:
            return value, pos


def structure_positions(fmt: str, data: bytes) -> np.ndarray:
    """Byte offsets outside the constant tensor data: where damage changes the graph, not the weights."""
    mask = np.ones(len(data), bool)
    for start, stop in weight_ranges(fmt, data):
        mask[start:stop] = False
    return np.flatnonzero(mask)


def mutate(data: bytes, kind: str, rng: np.random.Generator, structure: np.ndarray | None = None) -> bytes:
    """One damaged copy of ``data`` (``structure``: byte offsets of the non-weight part, for meta_* kinds)."""
    b = bytearray(data)
    n = len(b)
    if kind == "bitflip":
        for _ in range(int(rng.integers(1, 9))):
            i = int(rng.integers(0, n))
            b[i] ^= 1 << int(rng.integers(0, 8))
    elif kind == "truncate":
        b = b[: int(rng.integers(0, n))]
    elif kind == "zero_range":
        start = int(rng.integers(0, n))
        length = int(rng.integers(1, max(2, n // 8)))
        b[start : start + length] = bytes(len(b[start : start + length]))
    elif kind == "random_header":
        k = int(rng.integers(1, 65))
        b[:k] = rng.integers(0, 256, k, dtype=np.uint8).tobytes()
    elif kind == "overwrite_chunk":
        start = int(rng.integers(0, n))
        length = int(rng.integers(1, 33))
        chunk = rng.integers(0, 256, length, dtype=np.uint8).tobytes()
        b[start : start + length] = chunk[: len(b[start : start + length])]
    elif kind == "meta_bitflip":
        for _ in range(int(rng.integers(1, 5))):
            i = int(rng.choice(structure))
            b[i] ^= 1 << int(rng.integers(0, 8))
    elif kind == "meta_int":
        i = int(rng.choice(structure)) & ~3  # flatbuffer and most protobuf scalars sit on 4-byte boundaries
        value = int(rng.choice(INTERESTING)) if rng.random() < 0.7 else int(rng.integers(0, 2**32))
        b[i : i + 4] = value.to_bytes(4, "little")[: len(b[i : i + 4])]
    else:
        raise ValueError(kind)
    return bytes(b)


def child(path: Path, images: dict[tuple[int, ...], np.ndarray], msg_fd: int) -> None:
    """Runs in the forked child: load + predict, report through the exit code (and a message on msg_fd)."""
    from edgepack.errors import ModelLoadError
    from edgepack.runtime import load

    code, message = OK, ""
    try:
        p = load(path, threads=1)
        x = images.get(p.input_spec.shape)
        if x is None:  # the damage changed the input shape: feed images of the shape it now wants
            x = np.random.default_rng(0).integers(0, 256, (4, *p.input_spec.shape), dtype=np.uint8)
        probs = p.predict(x)
        if not np.isfinite(probs).all() or probs.shape != (len(x), p.n_classes):
            code, message = NON_FINITE, f"probabilities shape {probs.shape}, finite {np.isfinite(probs).all()}"
    except ModelLoadError as e:
        message = str(e)
        code = LOAD_ERROR if message and "\n" not in message else BAD_MESSAGE
    except BaseException as e:  # noqa: BLE001 - anything else is a finding
        code, message = OTHER_ERROR, f"{type(e).__name__}: {e}"
    os.write(msg_fd, message.encode("utf-8", "replace")[:2000])
    os._exit(code)


def run_case(path: Path, images: dict, timeout: float) -> tuple[str, str]:
    """Fork, run ``child``; returns (outcome, message). Outcomes: ok, load_error, crash, hang, other_error, ..."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        try:
            child(path, images, w)
        finally:
            os._exit(99)
    os.close(w)
    chunks, deadline = [], time.monotonic() + timeout
    while True:
        ready, _, _ = select.select([r], [], [], max(0.0, deadline - time.monotonic()))
        if not ready:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            os.close(r)
            return "hang", f"no answer within {timeout} s"
        data = os.read(r, 4096)
        if not data:
            break
        chunks.append(data)
    os.close(r)
    _, status = os.waitpid(pid, 0)
    message = b"".join(chunks).decode("utf-8", "replace")
    if os.WIFSIGNALED(status):
        return "crash", f"signal {signal.Signals(os.WTERMSIG(status)).name}"
    code = os.WEXITSTATUS(status)
    outcome = {OK: "ok", LOAD_ERROR: "load_error", OTHER_ERROR: "other_error", NON_FINITE: "non_finite",
               BAD_MESSAGE: "multi_line_message"}.get(code, f"exit_{code}")  # fmt: skip
    return outcome, message


def fuzz(formats: list[str], count: int, seed: int, timeout: float, keep: Path | None, quiet: bool) -> dict:
    # Import the engines once in the parent so each fork starts warm; no session exists yet, so no engine
    # thread pool is forked.
    import ai_edge_litert.interpreter  # noqa: F401
    import onnxruntime  # noqa: F401

    import edgepack.runtime  # noqa: F401

    ev = np.load(FIXTURES / "eval.npz")
    evb = np.load(FIXTURES / "eval-binary.npz")
    images = {(28, 28, 1): ev["x"][:4], (16, 16, 3): evb["x"][:4]}
    rng = np.random.default_rng(seed)
    summary: dict = {"count_per_format": count, "seed": seed, "formats": {}}
    failed = 0
    with tempfile.TemporaryDirectory(prefix="edgepack-fuzz-") as tmp:
        for fmt in formats:
            originals = []
            for name in SOURCES[fmt]:
                data = (FIXTURES / name).read_bytes()
                originals.append((name, data, structure_positions(fmt, data)))
            outcomes: collections.Counter[str] = collections.Counter()
            by_mutation: dict[str, collections.Counter[str]] = {m: collections.Counter() for m in MUTATIONS}
            reasons: collections.Counter[str] = collections.Counter()
            findings = []
            t0 = time.monotonic()
            for i in range(count):
                name, data, structure = originals[i % len(originals)]
                kind = MUTATIONS[(i // len(originals)) % len(MUTATIONS)]
                damaged = mutate(data, kind, rng, structure)
                path = Path(tmp) / f"case{i}.{fmt}"
                path.write_bytes(damaged)
                outcome, message = run_case(path, images, timeout)
                outcomes[outcome] += 1
                by_mutation[kind][outcome] += 1
                if outcome == "load_error":
                    reasons[_reason(message)] += 1
                elif outcome != "ok":
                    failed += 1
                    findings.append(
                        {"case": i, "source": name, "mutation": kind, "outcome": outcome, "message": message[:300]}
                    )
                    if keep is not None:
                        keep.mkdir(parents=True, exist_ok=True)
                        (keep / f"{fmt}-case{i}-{outcome}.{fmt}").write_bytes(damaged)
                path.unlink()
                if not quiet and (i + 1) % 200 == 0:
                    print(f"  {fmt}: {i + 1}/{count} {dict(outcomes)}", file=sys.stderr, flush=True)
            summary["formats"][fmt] = {
                "cases": count, "outcomes": dict(outcomes), "seconds": round(time.monotonic() - t0, 1),
                "by_mutation": {m: dict(c) for m, c in by_mutation.items()},
                "load_error_reasons": dict(reasons.most_common(12)), "failures": findings[:50],
            }  # fmt: skip
    summary["failures"] = failed
    return summary


def _reason(message: str) -> str:
    """The kind of a ModelLoadError message, without the path and numbers (for the summary)."""
    text = message.split(": ", 1)[-1]
    return "".join("#" if ch.isdigit() else ch for ch in text)[:70]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--count", type=int, default=2000, help="damaged copies per format (default 2000)")
    ap.add_argument("--formats", default="tflite,onnx", help="comma-separated: tflite,onnx")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--timeout", type=float, default=30.0, help="seconds before a child counts as hung")
    ap.add_argument("--keep", type=Path, help="save each failing damaged file here to reproduce it")
    ap.add_argument("--json", action="store_true", help="print the summary as JSON on stdout")
    ap.add_argument("-q", "--quiet", action="store_true")
    args = ap.parse_args(argv)
    formats = [f.strip() for f in args.formats.split(",") if f.strip()]
    if not formats or any(f not in SOURCES for f in formats) or args.count < 1:
        ap.error(f"--formats {args.formats!r} / --count {args.count}: choose formats from tflite, onnx and count >= 1")
    summary = fuzz(formats, args.count, args.seed, args.timeout, args.keep, args.quiet)
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        for fmt, s in summary["formats"].items():
            print(f"{fmt}: {s['cases']} damaged copies in {s['seconds']} s: {s['outcomes']}")
            for reason, n in s["load_error_reasons"].items():
                print(f"    {n:5d}  ModelLoadError: {reason}")
            for f in s["failures"][:10]:
                print(
                    f"    FAIL case {f['case']} ({f['source']}, {f['mutation']}): {f['outcome']}: {f['message'][:150]}"
                )
        print(f"failures: {summary['failures']}")
    return 1 if summary["failures"] else 0


if __name__ == "__main__":
    sys.exit(main())
