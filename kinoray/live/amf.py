"""AMF0, the encoding of RTMP's commands and metadata (Adobe's AMF0 specification), as far as RTMP publishers use
it: numbers, booleans, strings, objects, ECMA and strict arrays, null/undefined, dates and long strings.

Decoding is bounded: a value nests at most :data:`MAX_DEPTH` deep and a payload holds at most
:data:`MAX_VALUES` values, so a hostile publisher cannot make a small message cost much; anything malformed is
an :class:`~kinoray.errors.IngestProtocolError`.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping, Sequence

from kinoray.errors import IngestProtocolError

__all__ = ["AmfValue", "decode_all", "encode"]

#: What AMF0 carries, as Python values (dates become their milliseconds since the epoch).
AmfValue = float | bool | str | None | dict[str, "AmfValue"] | list["AmfValue"]

MAX_DEPTH = 16
MAX_VALUES = 4096

_NUMBER, _BOOLEAN, _STRING, _OBJECT, _NULL, _UNDEFINED, _ECMA_ARRAY, _OBJECT_END, _STRICT_ARRAY, _DATE, \
    _LONG_STRING = 0x00, 0x01, 0x02, 0x03, 0x05, 0x06, 0x08, 0x09, 0x0A, 0x0B, 0x0C


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data, self.position, self.values = data, 0, 0

    def take(self, count: int) -> bytes:
        end = self.position + count
        if end > len(self.data):
            raise IngestProtocolError("AMF0 value runs past the end of its message")
        chunk = self.data[self.position:end]
        self.position = end
        return chunk

    def string(self, length_bytes: int) -> str:
        (length,) = struct.unpack(">H" if length_bytes == 2 else ">I", self.take(length_bytes))
        try:
            return self.take(length).decode("utf-8")
        except UnicodeDecodeError:
            raise IngestProtocolError("AMF0 string is not UTF-8") from None

    def properties(self, depth: int) -> dict[str, AmfValue]:
        result: dict[str, AmfValue] = {}
        while True:
            key = self.string(2)
            if key == "":
                if self.take(1)[0] != _OBJECT_END:
                    raise IngestProtocolError("AMF0 object is missing its end marker")
                return result
            result[key] = self.value(depth + 1)

    def value(self, depth: int = 0) -> AmfValue:
        if depth > MAX_DEPTH:
            raise IngestProtocolError(f"AMF0 value nests deeper than {MAX_DEPTH}")
        self.values += 1
        if self.values > MAX_VALUES:
            raise IngestProtocolError(f"AMF0 payload holds more than {MAX_VALUES} values")
        marker = self.take(1)[0]
        if marker == _NUMBER:
            return float(struct.unpack(">d", self.take(8))[0])
        if marker == _BOOLEAN:
            return self.take(1)[0] != 0
        if marker == _STRING:
            return self.string(2)
        if marker == _LONG_STRING:
            return self.string(4)
        if marker == _OBJECT:
            return self.properties(depth)
        if marker == _ECMA_ARRAY:
            self.take(4)  # the count is a hint; the end marker is what ends it
            return self.properties(depth)
        if marker == _STRICT_ARRAY:
            (count,) = struct.unpack(">I", self.take(4))
            if count > MAX_VALUES:
                raise IngestProtocolError(f"AMF0 array of {count} values")
            return [self.value(depth + 1) for _ in range(count)]
        if marker in (_NULL, _UNDEFINED):
            return None
        if marker == _DATE:
            milliseconds = struct.unpack(">d", self.take(8))[0]
            self.take(2)  # time zone, unused by the format's own definition
            return float(milliseconds)
        raise IngestProtocolError(f"unsupported AMF0 type marker 0x{marker:02x}")


def decode_all(data: bytes) -> list[AmfValue]:
    """Every AMF0 value in ``data``, in order (an RTMP command: name, transaction id, arguments...)."""
    reader = _Reader(data)
    values: list[AmfValue] = []
    while reader.position < len(data):
        values.append(reader.value())
    return values


def _string(text: str) -> bytes:
    raw = text.encode("utf-8")
    if len(raw) > 0xFFFF:
        return bytes([_LONG_STRING]) + struct.pack(">I", len(raw)) + raw
    return bytes([_STRING]) + struct.pack(">H", len(raw)) + raw


def _properties(values: Mapping[str, AmfValue]) -> bytes:
    out = bytearray()
    for key, item in values.items():
        raw = key.encode("utf-8")
        out += struct.pack(">H", len(raw)) + raw + _one(item)
    return bytes(out + b"\x00\x00" + bytes([_OBJECT_END]))


def _one(value: AmfValue) -> bytes:
    if value is None:
        return bytes([_NULL])
    if isinstance(value, bool):
        return bytes([_BOOLEAN, 1 if value else 0])
    if isinstance(value, int | float):
        return bytes([_NUMBER]) + struct.pack(">d", float(value))
    if isinstance(value, str):
        return _string(value)
    if isinstance(value, Mapping):
        return bytes([_OBJECT]) + _properties(value)
    if isinstance(value, Sequence):
        return bytes([_STRICT_ARRAY]) + struct.pack(">I", len(value)) + b"".join(_one(item) for item in value)
    raise TypeError(f"cannot encode {type(value).__name__} as AMF0")


def encode(*values: AmfValue) -> bytes:
    """``values`` as consecutive AMF0 values."""
    return b"".join(_one(value) for value in values)
