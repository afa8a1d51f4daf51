"""The two engines behind a Predictor, reduced to what it needs: describe the I/O and run one batch.

onnxruntime: one InferenceSession shared by all threads (``Run`` is thread-safe); each thread runs through its own
I/O binding, bound once per input shape to a preallocated input and output buffer: a call copies the image into
the input buffer, runs the binding (the C++ call itself when the binding exposes it) and returns a copy of the
output buffer. Measured on the seed CNN: ~2 µs less per call than binding the input anew, and ~3.5 µs less than
``session.run``, which allocates the output and checks the feed in Python.
LiteRT: an interpreter is not thread-safe, so each thread runs its own (made from the same bytes on its first call),
resized only when the batch size it last ran changes. A call goes to the interpreter's C++ SetTensor/Invoke/GetTensor
when the wrapper exposes them (the public methods otherwise); ``predict`` writes its input straight into the input
tensor's memory instead of SetTensor copying it there. Engines are imported
here, lazily: loading a .tflite never imports onnxruntime and vice versa.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
from collections.abc import Iterator
from typing import Any, Protocol

import numpy as np

ORT_DTYPES = {"tensor(float)": "float32", "tensor(int8)": "int8", "tensor(uint8)": "uint8",
              "tensor(float16)": "float16", "tensor(double)": "float64"}  # fmt: skip


class Engine(Protocol):
    backend: str
    delegate: str  # what runs the graph: "CPUExecutionProvider", "xnnpack" or "builtin" (LiteRT's own kernels)
    input_name: str
    input_shape: list[Any]  # [N, H, W, C]; N may be None
    input_dtype: str
    input_quantization: tuple[float, int] | None
    output_name: str
    output_shape: list[Any]
    output_dtype: str
    output_quantization: tuple[float, int] | None
    # every graph output, in the file's order: {name, shape, dtype, quantization}; output_* above are outputs[0]
    outputs: list[dict[str, Any]]

    @property
    def n_outputs(self) -> int: ...

    def run(self, inp: np.ndarray) -> np.ndarray: ...

    def run_all(self, inp: np.ndarray) -> list[np.ndarray]: ...  # every output, in ``outputs`` order

    # fill(x, buffer) writes the input into the engine's per-thread buffer (viewed as fill_view if set); one run
    fill_view: np.dtype | None

    def run_fill(self, shape: tuple[int, ...], dtype: np.dtype, fill: Any, x: np.ndarray) -> np.ndarray: ...

    def close(self) -> None: ...


# False (the CLI's -q): LiteRT's C++ banner "Created TensorFlow Lite XNNPACK delegate for CPU." is not printed.
NATIVE_BANNERS = True


@contextlib.contextmanager
def _native_quiet() -> Iterator[None]:
    """Send file descriptor 2 to /dev/null for the block when NATIVE_BANNERS is off (C++ logs bypass sys.stderr)."""
    if NATIVE_BANNERS:
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    os.close(devnull)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def _columns(shape: list[Any]) -> int:
    """Values per image of an output shaped [N, ...]; -1 when a non-batch dimension is unknown."""
    dims = shape[1:]
    if not all(isinstance(d, int) and d > 0 for d in dims):
        return -1
    return int(np.prod(dims)) if dims else 1


class OrtEngine:
    backend = "onnxruntime"
    delegate = "CPUExecutionProvider"
    fill_view: np.dtype | None = None  # run_fill hands ``fill`` its buffer viewed as this dtype (set by the Predictor)

    def __init__(self, content: bytes, threads: int | None, folder: str | None = None) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.log_severity_level = 3  # errors only: warnings go to stderr from C++ and cannot be caught
        if folder is not None:  # external data is the model folder's, not the current directory's
            options.add_session_config_entry("session.model_external_initializers_file_folder_path", folder)
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
        self.outputs = [{"name": o.name, "shape": [d if isinstance(d, int) else None for d in o.shape],
                         "dtype": ORT_DTYPES.get(o.type, o.type), "quantization": None} for o in outputs]  # fmt: skip
        self._all_outputs = [o.name for o in outputs]
        self._outputs = [out.name]
        self._local = threading.local()  # per thread: {(shape, dtype): (binding, output buffer)}
        self._bindable = len(outputs) == 1 and self.output_dtype in ("float32", "int8", "uint8") \
            and _columns(self.output_shape) > 0  # fmt: skip

    @property
    def n_outputs(self) -> int:
        return _columns(self.output_shape)

    def run(self, inp: np.ndarray) -> np.ndarray:
        if not self._bindable or not inp.flags.c_contiguous:
            return self._session.run(self._outputs, {self.input_name: inp})[0]
        local = self._local
        slot = getattr(local, "last", None)  # fast path: the same shape and dtype as this thread's last call
        if slot is None or slot[0] != inp.shape or slot[1] != inp.dtype:
            slot = local.last = self._slot(inp.shape, inp.dtype)
        np.copyto(slot[3], inp)
        slot[2]()
        return slot[4].copy()  # the buffer is reused by this thread's next call

    def run_all(self, inp: np.ndarray) -> list[np.ndarray]:
        """Every output (``session.run`` allocates them: the caller owns the arrays)."""
        return self._session.run(self._all_outputs, {self.input_name: inp})

    def run_fill(self, shape: tuple[int, ...], dtype: np.dtype, fill: Any, x: np.ndarray) -> np.ndarray:
        """``fill(x, buffer)`` writes the input straight into this thread's bound input buffer; then one run.

        The Predictor's fast path: no engine-ready input array is made and copied; the output is a copy the
        caller owns, as from ``run``. ``buffer`` is viewed as ``fill_view`` when that is set."""
        if not self._bindable:
            buf = np.empty(shape, dtype)
            fill(x, buf if self.fill_view is None else buf.view(self.fill_view))
            return self._session.run(self._outputs, {self.input_name: buf})[0]
        local = self._local
        slot = getattr(local, "last", None)
        if slot is None or slot[0] != shape or slot[1] != dtype:
            slot = local.last = self._slot(shape, dtype)
        fill(x, slot[5])
        slot[2]()
        return slot[4].copy()

    def _slot(self, shape: tuple[int, ...], dtype: np.dtype) -> tuple[Any, ...]:
        """This thread's (shape, dtype, run, input buffer, output buffer) for one input shape and dtype."""
        slots = self._local.__dict__.setdefault("slots", {})
        key = (shape, dtype.str)
        slot = slots.get(key)
        if slot is None:
            if len(slots) >= 8:  # a few batch sizes per thread; a caller cycling through many rebuilds
                slots.clear()
            run, buf, out = self._bind(shape, dtype)
            view = buf if self.fill_view is None else buf.view(self.fill_view)
            slot = slots[key] = (shape, dtype, run, buf, out, view)
        return slot

    def _bind(self, shape: tuple[int, ...], dtype: np.dtype) -> tuple[Any, np.ndarray, np.ndarray]:
        """(run, input buffer, output buffer) for one input shape: the binding holds both buffers for good."""
        import onnxruntime as ort

        buf = np.empty(shape, dtype=dtype)
        out = np.empty((shape[0], *self.output_shape[1:]), dtype=self.output_dtype)
        binding = self._session.io_binding()
        binding.bind_ortvalue_input(self.input_name, ort.OrtValue.ortvalue_from_numpy(buf))
        binding.bind_ortvalue_output(self.output_name, ort.OrtValue.ortvalue_from_numpy(out))
        # No RunOptions: with one, ORT 1.32 looks up a WebGPU graph id that is not there and pays ~30 µs for the
        # C++ exception (measured). The C++ method behind InferenceSession.run_with_iobinding saves its Python
        # wrapper (~0.4 µs); the public call is the fallback if a later onnxruntime renames either attribute.
        sess, raw = getattr(self._session, "_sess", None), getattr(binding, "_iobinding", None)
        if sess is not None and raw is not None and hasattr(sess, "run_with_iobinding"):
            run = lambda: sess.run_with_iobinding(raw, None)  # noqa: E731
        else:
            run = lambda: self._session.run_with_iobinding(binding)  # noqa: E731
        return run, buf, out

    def close(self) -> None:
        self._session = None  # type: ignore[assignment]


class _Own:
    """One thread's LiteRT interpreter: the input shape it is allocated for and, on the fast path, a numpy view of
    its input tensor (dropped before the interpreter allocates again, which would free the memory it points to)."""

    __slots__ = ("interpreter", "raw", "shape", "view")

    def __init__(self, interpreter: Any, direct: bool) -> None:
        self.interpreter = interpreter
        self.raw = interpreter._interpreter if direct else None  # the C++ interpreter, when the wrapper has one
        self.shape = tuple(int(d) for d in interpreter.get_input_details()[0]["shape"])
        self.view: np.ndarray | None = None


class LiteRTEngine:
    backend = "litert"
    fill_view: np.dtype | None = None  # as OrtEngine.fill_view

    def __init__(self, content: bytes, threads: int | None) -> None:
        from ai_edge_litert.interpreter import Interpreter

        self._make = lambda: Interpreter(model_content=content, num_threads=threads)
        it = self._new_interpreter()
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
        self._input_dtype = np.dtype(inp["dtype"])
        self.input_quantization = _litert_quant(inp["quantization"])
        self.output_quantization = _litert_quant(out["quantization"])
        # run() names each output as the file's one signature does ("boxes"), else by its tensor name
        sigs = it._get_full_signature_list() if hasattr(it, "_get_full_signature_list") else {}
        by_index = {i: n for n, i in next(iter(sigs.values()))["outputs"].items()} if len(sigs) == 1 else {}
        self.outputs = [{"name": by_index.get(o["index"], o["name"]), "shape": [None if i == 0 else int(d) for i, d in enumerate(o["shape"])],
                         "dtype": np.dtype(o["dtype"]).name, "quantization": _litert_quant(o["quantization"])}
                        for o in outs]  # fmt: skip
        self._out_indices = [o["index"] for o in outs]
        # LiteRT applies its default CPU delegate (XNNPACK) to the nodes it supports, as one DELEGATE node
        ops = [o.get("op_name") for o in it._get_ops_details()] if hasattr(it, "_get_ops_details") else []
        self.delegate = "xnnpack" if "DELEGATE" in ops else "builtin"
        # set_tensor/invoke/get_tensor are thin Python wrappers over these C++ calls; invoke's wrapper also checks
        # that no numpy view of the interpreter's memory is alive, which the fast path keeps. ~0.5 µs per call.
        raw = getattr(it, "_interpreter", None)
        self._direct = all(callable(getattr(raw, name, None)) for name in
                           ("SetTensor", "Invoke", "GetTensor", "ResizeInputTensor", "AllocateTensors"))  # fmt: skip
        del raw
        # An interpreter is not thread-safe: each thread runs its own, made on its first call (this one is the
        # constructing thread's). Every call of a thread goes to the same interpreter, so its packed weights stay
        # in that core's caches, and no pool is locked or passed around.
        self._local = threading.local()
        self._local.own = _Own(it, self._direct)

    def _new_interpreter(self) -> Any:
        with _native_quiet():  # the delegate (and its banner) is made while the interpreter is built and allocated
            it = self._make()
            it.allocate_tensors()
        return it

    def _own(self, shape: tuple[int, ...]) -> _Own:
        """This thread's interpreter, allocated for input ``shape`` (resized here when it was not)."""
        own = getattr(self._local, "own", None)
        if own is None:
            own = self._local.own = _Own(self._new_interpreter(), self._direct)
        if own.shape != shape:
            own.view = None  # the view goes before allocate_tensors frees the memory it points to
            own.shape = None  # if the resize fails, the next call resizes again
            if own.raw is not None:
                # The wrapper's resize_tensor_input and allocate_tensors refuse while anything else holds the C++
                # interpreter (``own.raw`` does); the view was the only thing pointing into its memory.
                own.raw.ResizeInputTensor(self._in_index, np.array(shape, dtype=np.int32), False)
                own.raw.AllocateTensors()
            else:
                own.interpreter.resize_tensor_input(self._in_index, list(shape), strict=False)
                own.interpreter.allocate_tensors()
            own.shape = shape
        return own

    @property
    def n_outputs(self) -> int:
        return _columns(self.output_shape)

    def run(self, inp: np.ndarray) -> np.ndarray:
        own = self._own(inp.shape)
        raw = own.raw
        if raw is not None:  # the calls the public methods make, without their per-call Python checks
            raw.SetTensor(self._in_index, inp)
            raw.Invoke()
            return raw.GetTensor(self._out_index, 0)
        it = own.interpreter
        it.set_tensor(self._in_index, inp)
        it.invoke()
        return it.get_tensor(self._out_index)

    def run_all(self, inp: np.ndarray) -> list[np.ndarray]:
        """Every output (the arrays are copies the caller owns)."""
        own = self._own(inp.shape)
        if own.raw is not None:
            own.raw.SetTensor(self._in_index, inp)
            own.raw.Invoke()
            return [own.raw.GetTensor(i, 0) for i in self._out_indices]
        it = own.interpreter
        it.set_tensor(self._in_index, inp)
        it.invoke()
        return [it.get_tensor(i) for i in self._out_indices]

    def run_fill(self, shape: tuple[int, ...], dtype: np.dtype, fill: Any, x: np.ndarray) -> np.ndarray:
        """``fill(x, tensor)`` writes the input straight into the input tensor of this thread's interpreter (a
        numpy view of its memory, viewed as ``fill_view`` when set); then Invoke, and a copy of the output.

        The Predictor's fast path, as a C++ program calls TFLite: no input array is made and then copied in by
        SetTensor. The view stays valid until the interpreter allocates its tensors again, which happens only in
        ``_own``, on a new batch size, after the view is dropped."""
        own = getattr(self._local, "own", None)
        if own is None or own.view is None or own.shape != shape:
            own = self._own(shape)
            if own.raw is None or dtype != self._input_dtype:  # no C++ calls to bypass invoke's view check with
                buf = np.empty(shape, dtype)
                fill(x, buf if self.fill_view is None else buf.view(self.fill_view))
                return self.run(buf)
            view = own.interpreter.tensor(self._in_index)()
            own.view = view if self.fill_view is None else view.view(self.fill_view)
            del view
        fill(x, own.view)
        raw = own.raw
        raw.Invoke()
        return raw.GetTensor(self._out_index, 0)

    def close(self) -> None:
        self._local = threading.local()  # every thread's interpreter goes with the old one


def _litert_quant(q: tuple[float, int]) -> tuple[float, int] | None:
    scale, zero = q
    return (float(scale), int(zero)) if scale else None


ENGINES = {"onnx": OrtEngine, "tflite": LiteRTEngine}
