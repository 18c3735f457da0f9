"""Read initializers straight from ONNX protobuf bytes, without the ``onnx`` package.

The device side needs the base network's int8 codes and biases (to add deltas to), but
JetPack images do not always carry ``onnx``.  This is a tiny protobuf wire-format reader
for the fields edgetool's exporter writes: ModelProto.graph (7) -> GraphProto.initializer
(5) -> TensorProto {dims (1), data_type (2), name (8), raw_data (9)}.
"""

from __future__ import annotations

from typing import Dict, Iterable, Mapping, Optional, Tuple, Union

import numpy as np

# onnx.TensorProto.DataType values
_ONNX_DTYPES = {1: np.float32, 2: np.uint8, 3: np.int8, 6: np.int32, 7: np.int64, 10: np.float16}


def _varint(buf: memoryview, pos: int) -> Tuple[int, int]:
    result = 0
    shift = 0
    while True:
        if pos >= len(buf) or shift > 63:
            raise ValueError("truncated or malformed protobuf varint")
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7


def _fields(buf: memoryview):
    pos = 0
    end = len(buf)
    while pos < end:
        key, pos = _varint(buf, pos)
        field, wire = key >> 3, key & 7
        value: Union[int, memoryview]
        if wire == 0:
            value, pos = _varint(buf, pos)
        elif wire == 1:
            value = buf[pos : pos + 8]
            pos += 8
        elif wire == 2:
            n, pos = _varint(buf, pos)
            value = buf[pos : pos + n]
            pos += n
        elif wire == 5:
            value = buf[pos : pos + 4]
            pos += 4
        else:
            raise ValueError("unsupported protobuf wire type {}".format(wire))
        if pos > end:
            raise ValueError("truncated protobuf message")
        yield field, wire, value


def _tensor(buf: memoryview):
    dims = []
    dtype = None
    name = ""
    raw = None
    for field, wire, value in _fields(buf):
        if field == 1:
            if wire == 2:  # packed
                p = 0
                while p < len(value):
                    d, p = _varint(value, p)
                    dims.append(d)
            else:
                dims.append(value)
        elif field == 2:
            dtype = value
        elif field == 8:
            name = bytes(value).decode("utf-8")
        elif field == 9:
            raw = value
    return name, dims, dtype, raw


def _messages(buf: memoryview, number: int):
    """The embedded messages (length-delimited fields) numbered *number* of a message, in order."""
    return (value for field, wire, value in _fields(buf) if field == number and wire == 2)


def read_initializers(model_bytes: bytes, names: Optional[Iterable[str]] = None) -> Dict[str, np.ndarray]:
    """Return {name: array} for the initializers stored as raw_data (optionally only *names*)."""
    wanted = None if names is None else set(names)
    out = {}
    view = memoryview(model_bytes)
    for graph in _messages(view, 7):  # ModelProto.graph
        for tensor in _messages(graph, 5):  # GraphProto.initializer
            name, dims, dtype, raw = _tensor(tensor)
            if wanted is not None and name not in wanted:
                continue
            if raw is None or dtype not in _ONNX_DTYPES:
                raise ValueError("initializer {!r} is not stored as raw_data of a supported type".format(name))
            arr = np.frombuffer(bytes(raw), dtype=np.dtype(_ONNX_DTYPES[dtype]).newbyteorder("<"))
            out[name] = arr.astype(_ONNX_DTYPES[dtype]).reshape(dims)
    return out


def _dims(value_info: memoryview):
    """(name, [dim_value or dim_param]) of a ValueInfoProto (name 1, type 2 -> tensor_type 1 -> shape 2)."""
    name, dims = "", []
    for field, wire, value in _fields(value_info):
        if field == 1 and wire == 2:
            name = bytes(value).decode("utf-8")
        elif field == 2 and wire == 2:
            for tensor in _messages(value, 1):
                for shape in _messages(tensor, 2):
                    dims += [_dim(dim) for dim in _messages(shape, 1)]
    return name, dims


def _dim(dim: memoryview):
    for field, wire, value in _fields(dim):
        if field == 1 and wire == 0:
            return value
        if field == 2 and wire == 2:
            return bytes(value).decode("utf-8")
    return None


def graph_io(model_bytes: bytes):
    """({input name: dims}, {output name: dims}) of the model's graph, without the onnx package."""
    inputs: Dict[str, list] = {}
    outputs: Dict[str, list] = {}
    for graph in _messages(memoryview(model_bytes), 7):
        for gfield, gwire, vi in _fields(graph):
            if gwire == 2 and gfield in (11, 12):
                name, dims = _dims(vi)
                (inputs if gfield == 11 else outputs)[name] = dims
    return inputs, outputs


def _encode_varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def _raw_fields(buf: memoryview):
    """(field, wire, start, end) spans of each top-level field of a message."""
    pos = 0
    end = len(buf)
    while pos < end:
        start = pos
        key, pos = _varint(buf, pos)
        field, wire = key >> 3, key & 7
        if wire == 0:
            _, pos = _varint(buf, pos)
        elif wire == 1:
            pos += 8
        elif wire == 2:
            n, pos = _varint(buf, pos)
            pos += n
        elif wire == 5:
            pos += 4
        else:
            raise ValueError("unsupported protobuf wire type {}".format(wire))
        yield field, wire, start, pos


def _payload(buf: memoryview, start: int) -> memoryview:
    _, pos = _varint(buf, start)
    n, pos = _varint(buf, pos)
    return buf[pos : pos + n]


def _value_info_name(vi: memoryview) -> str:
    for field, wire, value in _fields(vi):
        if field == 1 and wire == 2:
            return bytes(value).decode("utf-8")
    return ""


def strip_initializer_inputs(model_bytes: bytes) -> bytes:
    """The model with every graph input that is also an initializer removed from graph.input.

    edgetool lists refittable initializers as graph inputs so ONNX Runtime can bind them;
    TensorRT should see them as plain weights.  Works on the serialized bytes, so the
    device needs no ``onnx`` package.
    """

    def keep(graph):
        inits = {_tensor(tensor)[0] for tensor in _messages(graph, 5)}
        return lambda gfield, gwire, gstart: (
            not (gfield == 11 and gwire == 2 and _value_info_name(_payload(graph, gstart)) in inits)
        )

    return _rewrite_graph(model_bytes, keep)


def _rewrite_graph(model_bytes: bytes, keep) -> bytes:
    """The model with the graph's fields filtered: *keep(graph)* gives a test
    ``(field, wire, start) -> bool`` for each field of that graph."""
    view = memoryview(model_bytes)
    out = bytearray()
    for field, wire, start, end in _raw_fields(view):
        if field != 7 or wire != 2:
            out += view[start:end]
            continue
        graph = _payload(view, start)
        test = keep(graph)
        new_graph = bytearray()
        for gfield, gwire, gstart, gend in _raw_fields(graph):
            if test(gfield, gwire, gstart):
                new_graph += graph[gstart:gend]
        out += _encode_varint((7 << 3) | 2) + _encode_varint(len(new_graph)) + new_graph
    return bytes(out)


def drop_initializers(model_bytes: bytes, names: Iterable[str]) -> bytes:
    """The model without the initializers *names*; they stay graph inputs, to be bound.

    ONNX Runtime keeps its own copy of every initializer, even one that a binding overrides;
    a backend that binds the refittable weights itself holds them once this way."""
    drop = set(names)

    def keep(graph):
        return lambda gfield, gwire, gstart: (
            not (gfield == 5 and gwire == 2 and _tensor(_payload(graph, gstart))[0] in drop)
        )

    return _rewrite_graph(model_bytes, keep)


def _payload_start(buf: memoryview, start: int) -> int:
    """Where the bytes of the length-delimited field starting at *start* begin."""
    _, pos = _varint(buf, start)
    _, pos = _varint(buf, pos)
    return pos


def initializer_spans(model_bytes: bytes) -> Dict[str, Tuple[int, int]]:
    """{name: (start, end)}: where each initializer's raw_data lies in *model_bytes*."""
    view = memoryview(model_bytes)
    out: Dict[str, Tuple[int, int]] = {}
    for field, wire, start, end in _raw_fields(view):
        if field != 7 or wire != 2:
            continue
        g0 = _payload_start(view, start)
        graph = view[g0:end]
        for gfield, gwire, gstart, gend in _raw_fields(graph):
            if gfield != 5 or gwire != 2:
                continue
            t0 = g0 + _payload_start(graph, gstart)
            tensor = view[t0 : g0 + gend]
            name, raw = None, None
            for tfield, twire, tstart, tend in _raw_fields(tensor):
                if tfield == 8 and twire == 2:
                    name = bytes(_payload(tensor, tstart)).decode("utf-8")
                elif tfield == 9 and twire == 2:
                    raw = (t0 + _payload_start(tensor, tstart), t0 + tend)
            if name is not None and raw is not None:
                out[name] = raw
    return out


def with_initializers(model_bytes: bytes, arrays: Mapping[str, np.ndarray]) -> bytes:
    """The model with the raw_data of the initializers *arrays* names replaced by their bytes
    (little-endian, each exactly as long as the bytes it replaces): every other byte stays."""
    spans = initializer_spans(model_bytes)
    out = bytearray(model_bytes)
    for name, a in arrays.items():
        if name not in spans:
            raise ValueError("no initializer {!r} stored as raw_data".format(name))
        start, end = spans[name]
        arr = np.ascontiguousarray(a)
        data = arr.astype(arr.dtype.newbyteorder("<"), copy=False).tobytes()
        if len(data) != end - start:
            raise ValueError("initializer {!r} holds {} bytes, not {}".format(name, end - start, len(data)))
        out[start:end] = data
    return bytes(out)
