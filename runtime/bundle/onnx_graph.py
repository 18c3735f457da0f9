"""Cutting a model at a tensor on its serialized bytes (no ``onnx`` package on the device): one model
that runs either the whole network, its trunk's output read beside the logits, or, given that
output, only the rest (:func:`trunk_or_given`)."""

from __future__ import annotations


from .onnx_weights import _encode_varint, _fields, _messages, _payload, _raw_fields, _tensor, _value_info_name


def _strings(buf: memoryview, number: int):
    return [bytes(v).decode("utf-8") for f, w, v in _fields(buf) if f == number and w == 2]


def _field(number: int, payload: bytes) -> bytes:
    return _encode_varint((number << 3) | 2) + _encode_varint(len(payload)) + payload


def _float_value_info(name: str) -> bytes:
    """ValueInfoProto {name, type: tensor(float)} with no shape."""
    tensor_type = _encode_varint((1 << 3) | 0) + _encode_varint(1)  # TypeProto.Tensor.elem_type = FLOAT
    return _field(1, name.encode("utf-8")) + _field(2, _field(1, tensor_type))


def _with_graph(model_bytes: bytes, make) -> bytes:
    """The model with its graph replaced by *make(graph)* (bytes of a GraphProto)."""
    view = memoryview(model_bytes)
    out = bytearray()
    for field, wire, start, end in _raw_fields(view):
        out += _field(7, make(_payload(view, start))) if field == 7 and wire == 2 else view[start:end]
    return bytes(out)


def _slice(nodes, outputs, start: str, constants) -> list:
    """Indices of the *nodes* that *outputs* need, back to tensor *start* and the *constants*
    (initializers); ValueError when they need anything else (the graph's data input)."""
    producer = {o: i for i, n in enumerate(nodes) for o in _strings(n, 2)}
    marked, stack, stray = set(), list(outputs), set()
    while stack:
        t = stack.pop()
        if not t or t == start or t in constants:
            continue
        if t not in producer:
            stray.add(t)
        elif producer[t] not in marked:
            marked.add(producer[t])
            stack.extend(_strings(nodes[producer[t]], 1))
    if stray:
        raise ValueError("tensor {!r} does not cut the graph: the rest also reads {}".format(start, sorted(stray)[0]))
    return sorted(marked)


def _node(op: str, inputs, outputs, name: str, attributes: bytes = b"") -> bytes:
    out = b"".join(_field(1, i.encode("utf-8")) for i in inputs)
    out += b"".join(_field(2, o.encode("utf-8")) for o in outputs)
    return out + _field(3, name.encode("utf-8")) + _field(4, op.encode("utf-8")) + attributes


def _graph_attribute(name: str, graph: bytes) -> bytes:
    """NodeProto.attribute {name, g: graph, type: GRAPH}."""
    return _field(5, _field(1, name.encode("utf-8")) + _field(6, graph) + _encode_varint(20 << 3) + _encode_varint(5))


def _renamed_output(node: memoryview, old: str, new: str) -> bytes:
    out = bytearray()
    for field, wire, start, end in _raw_fields(node):
        if field == 2 and wire == 2 and bytes(_payload(node, start)).decode("utf-8") == old:
            out += _field(2, new.encode("utf-8"))
        else:
            out += node[start:end]
    return bytes(out)


def _bool_scalar_info(name: str) -> bytes:
    """ValueInfoProto {name, type: tensor(bool), shape []}."""
    tensor_type = _encode_varint((1 << 3) | 0) + _encode_varint(9) + _field(2, b"")
    return _field(1, name.encode("utf-8")) + _field(2, _field(1, tensor_type))


def trunk_or_given(model_bytes: bytes, start: str, given: str, run_trunk: str) -> bytes:
    """One model that serves both passes of two-stage inference: when boolean input *run_trunk* is
    true, it computes tensor *start* (the trunk's output) from the image as before; when false, it
    takes *start* from float input *given* and runs only the rest.  The nodes only the trunk needs
    (its weights' dequantization too) move into an ``If``; what both parts need stays outside, and
    every weight stays a graph input of the one model, bound once.
    *start* is also an output (the trunk's output, for the second pass).  ValueError when the rest
    of the graph reads any trunk tensor but *start*."""

    def make(graph: memoryview) -> bytes:
        nodes = list(_messages(graph, 1))
        inits = {_tensor(t)[0] for t in _messages(graph, 5)}
        data = {_value_info_name(v) for v in _messages(graph, 11)} - inits
        producer = {o: i for i, n in enumerate(nodes) for o in _strings(n, 2)}
        if start not in producer:
            raise ValueError("no node computes tensor {!r}".format(start))
        live = set(data)  # the tensors computed from the image
        for n in nodes:
            if any(i in live for i in _strings(n, 1)):
                live.update(_strings(n, 2))
        if start not in live:
            raise ValueError("tensor {!r} is not computed from the image".format(start))
        keep, outs = inits | data, [_value_info_name(v) for v in _messages(graph, 12)]
        needs = set(_slice(nodes, [start], "", keep))  # every node the trunk's output needs
        rest = set(_slice(nodes, [o for o in outs if o != start], start, keep))  # and the outputs, past it
        trunk = sorted(needs - rest)  # into the branch: the weights' dequantization too, run only there
        inside = {o for i in trunk for o in _strings(nodes[i], 2)}
        outside = [i for i in range(len(nodes)) if i not in set(trunk)]
        leaks = {o for i in needs & rest for o in _strings(nodes[i], 2) if o in live}  # image work both need
        leaks |= {t for i in outside for t in _strings(nodes[i], 1) if t in inside and t != start}
        if leaks:
            raise ValueError(
                "tensor {!r} does not cut the graph: the rest also reads {}".format(start, sorted(leaks)[0])
            )
        ran, taken = start + "/computed", start + "/given"
        then = b"".join(_field(1, _renamed_output(nodes[i], start, ran)) for i in trunk)
        then += _field(2, b"trunk") + _field(12, _float_value_info(ran))
        other = _field(1, _node("Identity", [given], [taken], "given_trunk")) + _field(2, b"given")
        other += _field(12, _float_value_info(taken))
        branch = _node("If", [run_trunk], [start], "trunk_or_given", _graph_attribute("then_branch", then))
        branch += _graph_attribute("else_branch", other)
        at = producer[start]
        out = bytearray(b"".join(_field(1, bytes(nodes[i])) for i in outside if i < at))
        out += _field(1, branch) + b"".join(_field(1, bytes(nodes[i])) for i in outside if i > at)
        for field, wire, begin, end in _raw_fields(graph):
            moved = field == 13 and wire == 2 and _value_info_name(_payload(graph, begin)) in inside
            if not (field == 1 and wire == 2) and not moved:  # the shapes of tensors now in the branch go
                out += graph[begin:end]
        out += _field(11, _float_value_info(given)) + _field(11, _bool_scalar_info(run_trunk))
        return bytes(out + _field(12, _float_value_info(start)))

    return _with_graph(model_bytes, make)
