"""A bounds-checked reader of the protobuf wire format: enough to find a few fields without the schema's library.

Used where a file must be inspected before any library parses it (ONNX external-data paths in the lean runtime,
the Keras configuration inside a SavedModel). Standard library only; it raises ValueError, never crashes.
"""

from __future__ import annotations

from collections.abc import Iterator

Buffer = bytes | memoryview


def varint(data: Buffer, pos: int) -> tuple[int, int]:
    """(value, next position) of the varint at ``pos``."""
    value = shift = 0
    while True:
        if pos >= len(data) or shift > 63:
            raise ValueError("truncated varint")
        b = data[pos]
        pos += 1
        value |= (b & 0x7F) << shift
        shift += 7
        if not b & 0x80:
            return value, pos


def fields(data: Buffer) -> Iterator[tuple[int, int, Buffer | int]]:
    """(field number, wire type, value) of each field of one message: bytes for length-delimited, int otherwise."""
    view = memoryview(data) if isinstance(data, bytes) else data
    pos = 0
    while pos < len(view):
        key, pos = varint(view, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = varint(view, pos)
            yield number, wire, value
            continue
        if wire == 1:
            n = 8
        elif wire == 5:
            n = 4
        elif wire == 2:
            n, pos = varint(view, pos)
        else:
            raise ValueError(f"unsupported wire type {wire} at offset {pos}")
        if pos + n > len(view):
            raise ValueError(f"field {number} runs past the end of the data")
        if wire == 2:
            yield number, wire, view[pos : pos + n]
        pos += n


def messages(data: Buffer, number: int) -> list[Buffer]:
    """Every length-delimited field ``number`` of the message (repeated sub-messages or strings)."""
    return [v for n, w, v in fields(data) if n == number and w == 2]  # type: ignore[misc]
