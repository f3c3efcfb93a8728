"""YuNet's ONNX file edited for ONNX Runtime: its input's height and width made symbolic, on protobuf's wire
format directly (the onnx package is not a dependency of the inference install)."""

from __future__ import annotations

from typing import Callable

from ..errors import ModelError


def free_image_sides(model: bytes) -> bytes:
    """YuNet's ONNX bytes with the input's height and width symbolic (the file fixes 640 x 640; OpenCV resizes its
    graph, ONNX Runtime needs them free) and the outputs' and intermediate shapes dropped. ONNX's protobuf wire
    format is edited directly, as the onnx package is not a dependency: ModelProto.graph (7) > GraphProto.input
    (11, the one named ``input``) > ValueInfoProto.type (2) > TypeProto.tensor_type (1) > shape (2) > dims (1)."""

    def side(name: bytes) -> bytes:
        return _pb_field(1, _pb_field(2, name))  # TensorShapeProto.dim { dim_param: name }

    def shape(msg: bytes) -> bytes:
        dims = [raw for number, _, raw in _pb_fields(msg) if number == 1]
        return dims[0] + dims[1] + side(b"h") + side(b"w")

    def graph(msg: bytes) -> bytes:
        out = b""
        for number, body, raw in _pb_fields(msg):
            if number == 11 and _pb_first(body, 1) == b"input":
                raw = _pb_field(11, _pb_edit(body, (2, 1, 2), shape))
            elif number == 12:  # outputs: drop TypeProto.tensor_type.shape
                raw = _pb_field(12, _pb_edit(body, (2, 1), lambda t: b"".join(
                    r for n, _, r in _pb_fields(t) if n != 2)))
            elif number == 13:  # value_info: fixed intermediate shapes
                raw = b""
            out += raw
        return out

    return _pb_edit(model, (7,), graph)


def _pb_fields(msg: bytes) -> list[tuple[int, bytes | None, bytes]]:
    """(field number, payload of a length-delimited field or None, the field's raw bytes) of a protobuf message."""
    fields, i = [], 0
    while i < len(msg):
        start = i
        key, i = _pb_varint(msg, i)
        kind, body = key & 7, None
        if kind == 0:
            _, i = _pb_varint(msg, i)
        elif kind == 1:
            i += 8
        elif kind == 5:
            i += 4
        elif kind == 2:
            n, i = _pb_varint(msg, i)
            body, i = msg[i:i + n], i + n
        else:
            raise ModelError(f"YuNet's ONNX file is not a protobuf this reader knows (wire type {kind})")
        fields.append((key >> 3, body, msg[start:i]))
    if i != len(msg):
        raise ModelError("YuNet's ONNX file is truncated")
    return fields


def _pb_varint(data: bytes, i: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if i >= len(data):
            raise ModelError("YuNet's ONNX file is truncated")
        byte = data[i]
        value, shift, i = value | (byte & 0x7F) << shift, shift + 7, i + 1
        if byte < 0x80:
            return value, i


def _pb_field(number: int, body: bytes) -> bytes:
    """A length-delimited field."""
    out, n = bytearray(), len(body)
    for v in (number << 3 | 2, n):
        while v >= 0x80:
            out.append(v & 0x7F | 0x80)
            v >>= 7
        out.append(v)
    return bytes(out) + body


def _pb_first(msg: bytes, number: int) -> bytes | None:
    return next((body for n, body, _ in _pb_fields(msg) if n == number), None)


def _pb_edit(msg: bytes, path: tuple[int, ...], edit: Callable[[bytes], bytes]) -> bytes:
    """``msg`` with ``edit`` applied to every sub-message along ``path`` (field numbers, outermost first)."""
    if not path:
        return edit(msg)
    return b"".join(_pb_field(n, _pb_edit(body, path[1:], edit)) if n == path[0] and body is not None else raw
                    for n, body, raw in _pb_fields(msg))
