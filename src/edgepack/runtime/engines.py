"""The two engines behind a Predictor, reduced to what it needs: describe the I/O and run one batch.

onnxruntime: one InferenceSession shared by all threads (``Run`` is thread-safe). LiteRT: an interpreter is
not thread-safe, so a pool hands each concurrent caller its own interpreter (made from the same bytes);
each interpreter is resized only when the batch size it last ran changes. Engines are imported here, lazily:
loading a .tflite never imports onnxruntime and vice versa.
"""

from __future__ import annotations

from collections import deque
from typing import Any, Protocol

import numpy as np

ORT_DTYPES = {"tensor(float)": "float32", "tensor(int8)": "int8", "tensor(uint8)": "uint8",
              "tensor(float16)": "float16", "tensor(double)": "float64"}  # fmt: skip


class Engine(Protocol):
    backend: str
    input_name: str
    input_shape: list[Any]  # [N, H, W, C]; N may be None
    input_dtype: str
    input_quantization: tuple[float, int] | None
    output_name: str
    output_shape: list[Any]
    output_dtype: str
    output_quantization: tuple[float, int] | None

    @property
    def n_outputs(self) -> int: ...

    def run(self, inp: np.ndarray) -> np.ndarray: ...

    def close(self) -> None: ...


def _columns(shape: list[Any]) -> int:
    """Values per image of an output shaped [N, ...]; -1 when a non-batch dimension is unknown."""
    dims = shape[1:]
    if not all(isinstance(d, int) and d > 0 for d in dims):
        return -1
    return int(np.prod(dims)) if dims else 1


class OrtEngine:
    backend = "onnxruntime"

    def __init__(self, content: bytes, threads: int | None) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.log_severity_level = 3  # errors only: warnings go to stderr from C++ and cannot be caught
        if threads is not None:
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
        # enable_fallback=0: no retry, and no "EP Error" banner printed to stdout when a file is rejected
        self._session = ort.InferenceSession(content, sess_options=options, providers=["CPUExecutionProvider"],
                                             enable_fallback=0)  # fmt: skip
        inputs, outputs = self._session.get_inputs(), self._session.get_outputs()
        if len(inputs) != 1 or not outputs:
            raise ValueError(f"{len(inputs)} inputs and {len(outputs)} outputs: expected one image input and an output")
        inp, out = inputs[0], outputs[0]
        self.input_name, self.output_name = inp.name, out.name
        self.input_shape = [d if isinstance(d, int) else None for d in inp.shape]
        self.output_shape = [d if isinstance(d, int) else None for d in out.shape]
        self.input_dtype = ORT_DTYPES.get(inp.type, inp.type)
        self.output_dtype = ORT_DTYPES.get(out.type, out.type)
        self.input_quantization = self.output_quantization = None  # QDQ models keep float I/O
        self._outputs = [out.name]

    @property
    def n_outputs(self) -> int:
        return _columns(self.output_shape)

    def run(self, inp: np.ndarray) -> np.ndarray:
        return self._session.run(self._outputs, {self.input_name: inp})[0]

    def close(self) -> None:
        self._session = None  # type: ignore[assignment]


class _Slot:
    """One LiteRT interpreter and the batch size its input is currently sized for."""

    __slots__ = ("interpreter", "batch")

    def __init__(self, interpreter: Any, batch: int) -> None:
        self.interpreter = interpreter
        self.batch = batch


class LiteRTEngine:
    backend = "litert"

    def __init__(self, content: bytes, threads: int | None) -> None:
        from ai_edge_litert.interpreter import Interpreter

        self._make = lambda: Interpreter(model_content=content, num_threads=threads)
        first = self._new_slot()
        it = first.interpreter
        ins, outs = it.get_input_details(), it.get_output_details()
        if len(ins) != 1 or not outs:
            raise ValueError(f"{len(ins)} inputs and {len(outs)} outputs: expected one image input and an output")
        inp, out = ins[0], outs[0]
        self._in_index, self._out_index = inp["index"], out["index"]
        self.input_name, self.output_name = inp["name"], out["name"]
        self.input_shape = [None if i == 0 else int(d) for i, d in enumerate(inp["shape"])]
        self.output_shape = [None if i == 0 else int(d) for i, d in enumerate(out["shape"])]
        self.input_dtype = np.dtype(inp["dtype"]).name
        self.output_dtype = np.dtype(out["dtype"]).name
        self.input_quantization = _litert_quant(inp["quantization"])
        self.output_quantization = _litert_quant(out["quantization"])
        # deque.append/pop are atomic in CPython: the pool needs no lock, and the interpreter a caller
        # pops is its own until it is appended back.
        self._idle: deque[_Slot] = deque([first])

    def _new_slot(self) -> _Slot:
        it = self._make()
        it.allocate_tensors()
        return _Slot(it, int(it.get_input_details()[0]["shape"][0]))

    @property
    def n_outputs(self) -> int:
        return _columns(self.output_shape)

    def run(self, inp: np.ndarray) -> np.ndarray:
        try:
            slot = self._idle.pop()
        except IndexError:
            slot = self._new_slot()
        try:
            it = slot.interpreter
            n = inp.shape[0]
            if slot.batch != n:
                slot.batch = -1  # if the resize fails, the next caller resizes again
                it.resize_tensor_input(self._in_index, list(inp.shape), strict=False)
                it.allocate_tensors()
                slot.batch = n
            it.set_tensor(self._in_index, inp)
            it.invoke()
            return it.get_tensor(self._out_index)
        finally:
            self._idle.append(slot)

    def close(self) -> None:
        self._idle.clear()


def _litert_quant(q: tuple[float, int]) -> tuple[float, int] | None:
    scale, zero = q
    return (float(scale), int(zero)) if scale else None


ENGINES = {"onnx": OrtEngine, "tflite": LiteRTEngine}
