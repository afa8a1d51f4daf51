"""Checks on a model file's bytes before any engine sees them.

What the engines already refuse safely (found by benchmarks/fuzz_runtime.py): LiteRT's Python interpreter
builds through the flatbuffer verifier (VerifyAndBuildFromBuffer) and checks tensor/buffer/op indices, buffer
sizes and quantization in Prepare; onnxruntime parses the protobuf and type/shape-checks the graph. What they
do not refuse: a TFLite tensor whose shape was damaged to an enormous size. The interpreter then tries to
allocate it (a bit flip turning 26 into 134 217 754 made it allocate ~14 GB and spin for minutes; on a device
the out-of-memory killer ends the process). So the TFLite tensor table is read here with bounds-checked
reads, and every tensor must have a sane rank and byte size. Pure Python: it cannot crash, only raise.
"""

from __future__ import annotations

import os
import signal
import struct
import time
from pathlib import Path

from edgepack.errors import ModelLoadError

MAX_TENSOR_BYTES = 256 << 20  # one tensor of a small edge CNN is a few MB at most
MAX_TOTAL_TENSOR_BYTES = 1 << 30
MAX_RANK = 8
MAX_TENSORS = 100_000
# TFLite TensorType -> bytes per element (schema.fbs); unknown types are refused by the interpreter itself.
TFLITE_ITEMSIZE = {
    0: 4,
    1: 2,
    2: 4,
    3: 1,
    4: 8,
    5: 1,
    6: 1,
    7: 2,
    8: 8,
    9: 1,
    10: 8,
    11: 16,
    12: 8,
    15: 4,
    16: 2,
    17: 1,
}


def check(fmt: str, content: bytes, path: Path) -> None:
    """Raise ModelLoadError unless ``content`` is structurally a sound ``fmt`` (onnx | tflite) model."""
    if fmt == "tflite":
        if len(content) < 8 or content[4:8] != b"TFL3":
            raise ModelLoadError(f"{path}: not a TFLite model (no TFL3 file identifier)")
        try:
            _check_tflite_tensors(_FlatBuffer(content))
        except _Bad as e:
            raise ModelLoadError(f"{path}: not a valid tflite model: {e}") from None
    elif fmt == "onnx":
        if len(content) < 16:
            raise ModelLoadError(f"{path}: not an ONNX model ({len(content)} bytes)")
        check_onnx_external_data(content, path)


def onnx_external_locations(content: bytes) -> list[str]:
    """The ``location`` of every tensor whose data lives in another file (initializers, Constant attributes,
    sparse tensors, subgraphs and functions). Raises ValueError when the protobuf is damaged."""
    from edgepack import protowire as pw

    found: list[str] = []

    def tensor(t: pw.Buffer) -> None:  # TensorProto: external_data = 13 {key = 1, value = 2}
        for entry in pw.messages(t, 13):
            kv = {n: bytes(v) for n, w, v in pw.fields(entry) if w == 2}  # type: ignore[arg-type]
            if kv.get(1) == b"location":
                found.append(kv.get(2, b"").decode("utf-8", errors="replace"))

    def sparse(s: pw.Buffer) -> None:  # SparseTensorProto: values = 1, indices = 2
        for number in (1, 2):
            for t in pw.messages(s, number):
                tensor(t)

    def nodes(container: pw.Buffer, field: int, depth: int) -> None:  # NodeProto.attribute = 5
        for node in pw.messages(container, field):
            for attr in pw.messages(node, 5):  # AttributeProto: t 5, g 6, tensors 10, graphs 11, sparse 22/23
                for n, w, v in pw.fields(attr):
                    if w != 2:
                        continue
                    if n in (5, 10):
                        tensor(v)  # type: ignore[arg-type]
                    elif n in (6, 11):
                        graph(v, depth + 1)  # type: ignore[arg-type]
                    elif n in (22, 23):
                        sparse(v)  # type: ignore[arg-type]

    def graph(g: pw.Buffer, depth: int) -> None:  # GraphProto: node 1, initializer 5, sparse_initializer 15
        if depth > 64:
            raise ValueError("subgraphs nested more than 64 deep")
        for t in pw.messages(g, 5):
            tensor(t)
        for s in pw.messages(g, 15):
            sparse(s)
        nodes(g, 1, depth)

    for g in pw.messages(content, 7):  # ModelProto: graph 7, functions 25 (FunctionProto.node = 7)
        graph(g, 0)
    for f in pw.messages(content, 25):
        nodes(f, 7, 0)
    return found


def check_onnx_external_data(content: bytes, path: Path) -> None:
    """Refuse external data that is not a file inside the model's own folder (absolute, ``..``, a symlink out)."""
    try:
        locations = onnx_external_locations(content)
    except ValueError as e:
        raise ModelLoadError(f"{path}: not a valid onnx model: {e}") from None
    folder = path.parent.resolve()
    for loc in dict.fromkeys(locations):
        target = (folder / loc).resolve()
        if not loc or Path(loc).is_absolute() or (target != folder and folder not in target.parents):
            raise ModelLoadError(f"{path}: external data {loc!r} points outside the model's folder {folder}; "
                                 "external data must be a file beside the model or below its folder")  # fmt: skip
        if not target.is_file():
            raise ModelLoadError(f"{path}: external data {loc!r} not found in the model's folder {folder}")


class _Bad(Exception):
    pass


PROBE_TIMEOUT_S = 60.0


def probe_tflite(content: bytes, path: Path, timeout: float = PROBE_TIMEOUT_S) -> None:
    """Load, allocate and invoke the model once in a forked child; a crash there is a ModelLoadError here.

    Some malformed files pass the flatbuffer verifier and the checks above but make LiteRT's C++ abort the
    whole process while preparing a kernel (seen on aarch64 only: a bit-flipped int8 FULLY_CONNECTED that
    x86 rejects cleanly). A fork costs a few milliseconds and takes nothing down with it. Python-level
    errors in the child are left for the parent's own load to report with their message.
    """
    if not hasattr(os, "fork"):
        return
    pid = os.fork()
    if pid == 0:  # the child: never returns into the caller's code
        code = 0
        try:
            import faulthandler

            faulthandler.disable()  # a crash here is the finding, not something to dump
            devnull = os.open(os.devnull, os.O_WRONLY)  # LiteRT's C++ banners: the parent prints its own
            os.dup2(devnull, 2)
            import numpy as np
            from ai_edge_litert.interpreter import Interpreter

            it = Interpreter(model_content=content, num_threads=1)
            it.allocate_tensors()
            d = it.get_input_details()[0]
            for n in (1, 2):  # the first call and a batch resize both run the kernels' Prepare
                shape = [n, *[int(s) for s in d["shape"][1:]]]
                it.resize_tensor_input(d["index"], shape, strict=False)
                it.allocate_tensors()
                it.set_tensor(d["index"], np.zeros(shape, dtype=d["dtype"]))
                it.invoke()
        except BaseException:  # noqa: BLE001 - reported by the parent's own load
            code = 3
        os._exit(code)
    deadline = time.monotonic() + timeout
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            raise ModelLoadError(f"{path}: the TFLite interpreter did not finish loading this file in {timeout:g} s")
        time.sleep(0.001)
    if os.WIFSIGNALED(status):
        name = signal.Signals(os.WTERMSIG(status)).name
        raise ModelLoadError(f"{path}: the TFLite interpreter crashes on this file ({name}); it is damaged or not "
                             "a model this runtime can run")  # fmt: skip


class _FlatBuffer:
    """Just enough of the flatbuffers wire format to walk tables and vectors, every read bounds-checked."""

    def __init__(self, data: bytes) -> None:
        self.data = data

    def _read(self, fmt: str, pos: int) -> int:
        size = struct.calcsize(fmt)
        if pos < 0 or pos + size > len(self.data):
            raise _Bad(f"offset {pos} points outside the {len(self.data)}-byte file")
        return struct.unpack_from(fmt, self.data, pos)[0]

    def root(self) -> int:
        return self._read("<I", 0)

    def field(self, table: int, index: int) -> int | None:
        """Position of field ``index`` of the table at ``table``, or None when absent."""
        vtable = table - self._read("<i", table)
        vsize = self._read("<H", vtable)
        slot = 4 + 2 * index
        if slot + 2 > vsize:
            return None
        offset = self._read("<H", vtable + slot)
        return table + offset if offset else None

    def deref(self, pos: int) -> int:
        return pos + self._read("<I", pos)

    def vector(self, table: int, index: int, item_size: int) -> tuple[int, int]:
        """(start, length) of a vector field; (0, 0) when absent."""
        pos = self.field(table, index)
        if pos is None:
            return 0, 0
        vec = self.deref(pos)
        n = self._read("<I", vec)
        if vec + 4 + n * item_size > len(self.data):
            raise _Bad(f"a vector of {n} items at offset {vec} runs past the end of the file")
        return vec + 4, n

    def tables(self, table: int, index: int) -> list[int]:
        start, n = self.vector(table, index, 4)
        return [self.deref(start + 4 * i) for i in range(n)]

    def int32s(self, table: int, index: int) -> list[int]:
        start, n = self.vector(table, index, 4)
        return list(struct.unpack_from(f"<{n}i", self.data, start)) if n else []

    def scalar(self, table: int, index: int, fmt: str, default: int) -> int:
        pos = self.field(table, index)
        return default if pos is None else self._read(fmt, pos)


def _check_tflite_tensors(fb: _FlatBuffer) -> None:
    model = fb.root()
    version = fb.scalar(model, 0, "<I", 0)
    if version != 3:
        raise _Bad(f"schema version {version}: expected 3")
    subgraphs = fb.tables(model, 2)
    if not subgraphs:
        raise _Bad("no subgraph in the model")
    total = 0
    for g, subgraph in enumerate(subgraphs):
        tensors = fb.tables(subgraph, 0)
        if len(tensors) > MAX_TENSORS:
            raise _Bad(f"subgraph {g} has {len(tensors)} tensors: at most {MAX_TENSORS} allowed")
        for t, tensor in enumerate(tensors):
            for shape_field in (0, 7):  # shape, shape_signature
                shape = fb.int32s(tensor, shape_field)
                if len(shape) > MAX_RANK:
                    raise _Bad(f"tensor {t} has rank {len(shape)}: at most {MAX_RANK} allowed")
                lowest = -1 if shape_field == 7 else 0  # -1 = a dynamic dimension, only in shape_signature
                if any(d < lowest for d in shape):
                    raise _Bad(f"tensor {t} has shape {shape}: dimensions must be >= {lowest}")
            elements = 1
            for d in fb.int32s(tensor, 0):
                elements *= d
            nbytes = elements * TFLITE_ITEMSIZE.get(fb.scalar(tensor, 1, "<b", 0), 1)
            if nbytes > MAX_TENSOR_BYTES:
                raise _Bad(f"tensor {t} has shape {fb.int32s(tensor, 0)} ({nbytes} bytes): larger than the "
                           f"{MAX_TENSOR_BYTES >> 20} MB a tensor may have")  # fmt: skip
            total += nbytes
    if total > MAX_TOTAL_TENSOR_BYTES:
        raise _Bad(f"tensors of {total} bytes in all: more than the {MAX_TOTAL_TENSOR_BYTES >> 20} MB allowed")
