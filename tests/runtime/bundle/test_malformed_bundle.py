"""Malformed bundles: each is refused with BundleError, a message naming the problem, one CLI line, no state change."""

import os

import pytest

from edgetool.cli import main
from edgetool.runtime.bundle.reader import Bundle
from edgetool.runtime.errors import BundleError

from hostile import load_manifest, private_tmp, save_manifest, snapshot, write_listed  # noqa: F401


def _set(path, value):
    def mutate(root, m):
        obj = m
        for k in path[:-1]:
            obj = obj[k]
        obj[path[-1]] = value

    return mutate


def _drop(path):
    def mutate(root, m):
        obj = m
        for k in path[:-1]:
            obj = obj[k]
        del obj[path[-1]]

    return mutate


def _rename_super(name):
    def mutate(root, m):
        m["hierarchy"]["superclasses"][0]["name"] = name
        m["deltas"][0]["superclass"] = name

    return mutate


def _raw_manifest(data):
    def mutate(root, m):
        with open(os.path.join(root, "manifest.json"), "wb") as f:
            f.write(data)
        return True

    return mutate


def _base_bytes(data):
    def mutate(root, m):
        write_listed(root, m["base"], data)

    return mutate


def _dup_super(root, m):
    m["hierarchy"]["superclasses"][1]["name"] = m["hierarchy"]["superclasses"][0]["name"]


def _tensor(key, value, which=0):
    def mutate(root, m):
        m["refit"]["tensors"][which][key] = value

    return mutate


def _samples_pickle(root, m):
    import io

    import numpy as np

    buf = io.BytesIO()
    np.save(buf, np.array([{"a": "x" * 40000}], dtype=object), allow_pickle=True)
    write_listed(root, m["samples"], buf.getvalue())


def _input_shape(shape):
    def mutate(root, m):
        m["input"]["shape"] = shape
        m.pop("samples")

    return mutate


CASES = [
    ("stored_size_text", _set(("deltas", 0, "stored_size"), "abc"), "deltas[0].size"),
    ("stored_size_bool", _set(("deltas", 0, "stored_size"), True), "not an integer"),
    ("stored_size_negative", _set(("deltas", 0, "stored_size"), -1), "out of range"),
    ("stored_size_float", _set(("deltas", 0, "stored_size"), 12.5), "not an integer"),
    ("deltas_string", _set(("deltas",), "deltas/x.7z"), "deltas"),
    ("deltas_missing_entry", lambda r, m: m["deltas"].pop() and None, "entries for"),
    ("delta_no_sha256", _drop(("deltas", 0, "sha256")), "deltas[0].sha256"),
    ("delta_sha256_not_hex", _set(("deltas", 0, "sha256"), "z" * 64), "deltas[0].sha256"),
    ("delta_index_out_of_range", _set(("deltas", 1, "index"), 99), "deltas[1].index"),
    ("delta_unknown_codec", _set(("deltas", 0, "codec"), "gzip"), "deltas[0].codec"),
    ("delta_raw_size_wrong", _set(("deltas", 0, "raw_size"), 10), "raw_size"),
    ("delta_path_nul", _set(("deltas", 0, "file"), "deltas/a\x00b.7z"), "unprintable"),
    ("delta_path_traversal", _set(("deltas", 0, "file"), "deltas/../../etc/passwd"), "plain relative path"),
    ("delta_path_absolute", _set(("deltas", 0, "file"), "/etc/passwd"), "plain relative path"),
    ("delta_path_outside_deltas", _set(("deltas", 0, "file"), "samples.npy"), "not inside deltas/"),
    ("delta_wrong_superclass", _set(("deltas", 0, "superclass"), "nope"), "deltas[0].superclass"),
    ("no_base", _drop(("base",)), "base"),
    ("base_size_huge", _set(("base", "size"), 10**15), "base.size"),
    ("superclass_no_subclasses", _set(("hierarchy", "superclasses", 0, "subclasses"), []), "no subclasses"),
    ("superclass_duplicate", _dup_super, "duplicate name"),
    ("superclass_slash", _rename_super("a/b"), "single path component"),
    ("superclass_nul", _rename_super("a\x00b"), "unprintable"),
    ("superclass_newline", _rename_super("a\nb"), "unprintable"),
    ("superclass_escape", _rename_super("\x1b[31mred"), "unprintable"),
    ("superclass_rlo", _rename_super("abc\u202egpj.exe"), "unprintable"),
    ("superclass_dotdot", _rename_super(".."), "single path component"),
    ("subclass_not_text", _set(("hierarchy", "superclasses", 0, "subclasses"), [1, 2]), "not a string"),
    ("subclass_duplicate", _set(("hierarchy", "superclasses", 0, "subclasses"), ["a", "a"]), "duplicate name"),
    ("head_width_huge", _set(("head_width",), 10**12), "head_width"),
    ("head_width_too_small", _set(("head_width",), 1), "head_width"),
    ("head_width_not_model", _set(("head_width",), 9), "head_width"),
    ("total_nbytes_huge", _set(("refit", "total_nbytes"), 10**15), "refit.total_nbytes"),
    ("tensor_offset_float", _tensor("offset", 256.0, 1), "offset"),
    ("tensor_offset_overlap", _tensor("offset", 0, 1), "layout does not fit"),
    ("tensor_shape_zero", _tensor("shape", [0, 1, 3, 3]), "shape[0]"),
    ("tensor_nbytes_wrong", _tensor("nbytes", 7), "layout does not fit"),
    ("input_shape_wrong", _input_shape([1, 32, 32]), "input 'input' has dims"),
    ("input_shape_zero", _set(("input", "shape"), [1, 0, 28]), "input.shape[1]"),
    ("input_mean_length", _set(("input", "mean"), [0.1, 0.2]), "input.mean"),
    ("input_std_zero", _set(("input", "std"), [0.0]), "input.std[0]"),
    ("input_channels", _set(("input", "shape"), [5, 28, 28]), "channels"),
    ("input_resize_unknown", _set(("input", "resize"), "stretch"), "input.resize"),
    ("input_resize_not_text", _set(("input", "resize"), 256), "input.resize"),
    ("input_crop_zero", lambda r, m: m["input"].update(resize="shorter", crop=0.0), "input.crop"),
    ("input_crop_above_one", lambda r, m: m["input"].update(resize="shorter", crop=1.5), "input.crop"),
    ("input_crop_text", lambda r, m: m["input"].update(resize="shorter", crop="0.875"), "input.crop"),
    ("input_crop_without_shorter", _set(("input", "crop"), 0.875), "input.crop"),
    ("input_shorter_not_square", lambda r, m: m["input"].update(resize="shorter", shape=[1, 28, 32]), "input.resize"),
    ("output_name_wrong", _set(("output", "name"), "probs"), "output 'probs'"),
    ("schema_unknown", _set(("schema",), "other/9"), "unknown schema"),
    ("manifest_not_json", _raw_manifest(b"{not json"), "not valid JSON"),
    ("manifest_list", _raw_manifest(b"[1, 2]"), "unknown schema"),
    ("manifest_nan", _raw_manifest(b'{"schema": "edgetool.bundle/1", "head_width": NaN}'), "NaN"),
    ("manifest_deep", _raw_manifest(b"[" * 200000 + b"]" * 200000), "nested too deeply"),
    ("manifest_huge", _raw_manifest(b" " * (17 << 20)), "more than"),
    ("manifest_binary", _raw_manifest(b"\xff\xfe\x00"), "not valid JSON"),
    ("base_two_bytes", _base_bytes(b"\x3a\x80"), "cannot come from a 2-byte base.onnx"),
    ("base_truncated_varint", _base_bytes(b"\x3a\xff\xff" + bytes(1 << 17)), "not a readable ONNX model"),
    ("base_field_overruns", _base_bytes(b"\x3a\xff\xff\xff\xff\x0f" + bytes(1 << 17)), "not a readable ONNX model"),
    ("samples_pickled", _samples_pickle, "samples"),
    ("routing_not_object", _set(("routing",), [0.6, 2]), "routing"),
    ("routing_gate_above_one", _set(("routing",), {"gate": 1.5, "k": 2}), "routing.gate"),
    ("routing_gate_text", _set(("routing",), {"gate": "0.6", "k": 2}), "routing.gate"),
    ("routing_k_zero", _set(("routing",), {"gate": 0.6, "k": 0}), "routing.k"),
    ("routing_k_beyond_superclasses", _set(("routing",), {"gate": 0.6, "k": 99}), "routing.k"),
    ("routing_beta_negative", _set(("routing",), {"gate": 0.6, "k": 2, "beta": -1}), "routing.beta"),
    ("routing_chosen_on_escape", _set(("routing",), {"gate": 0.6, "k": 2, "chosen_on": "\x1b[2J"}), "unprintable"),
    ("training_not_object", _set(("training",), "30%"), "training"),
    ("budget_unknown_mode", _set(("training", "delta_budget", "mode"), "lasso"), "training.delta_budget.mode"),
    ("budget_value_negative", _set(("training", "delta_budget", "value"), -0.5), "training.delta_budget.value"),
    ("budget_value_text", _set(("training", "delta_budget", "value"), "0.3"), "training.delta_budget.value"),
    ("budget_text_escape", _set(("training", "delta_budget", "text"), "\x1b[2J"), "unprintable"),
]


@pytest.mark.parametrize("name,mutate,needle", CASES, ids=[c[0] for c in CASES])
def test_malformed_manifest_refused(bundle_copy, private_tmp, capsys, name, mutate, needle):  # noqa: F811
    m = load_manifest(bundle_copy)
    if not mutate(bundle_copy, m):
        save_manifest(bundle_copy, m)
    before = snapshot(bundle_copy, private_tmp)
    with pytest.raises(BundleError) as exc:
        with Bundle.open(bundle_copy) as b:
            b.samples()
    assert needle in str(exc.value), str(exc.value)
    assert "manifest.json" in str(exc.value) or "base.onnx" in str(exc.value) or "samples" in str(exc.value)
    with pytest.raises(SystemExit) as code:
        main(["inspect", bundle_copy] if name != "samples_pickled" else ["doctor", bundle_copy])
    out = capsys.readouterr()
    err = out.err.strip().splitlines()
    assert code.value.code != 0
    assert len(err) == 1 and err[0].startswith("error: "), err
    assert needle in (err[0] if name != "samples_pickled" else out.out), out
    after = snapshot(bundle_copy, private_tmp)
    if name == "samples_pickled":  # doctor's own device checks may leave files of theirs in the temp dir
        after = {k: v for k, v in after.items() if not k.startswith(private_tmp) or "edgetool" in k}
        before = {k: v for k, v in before.items() if not k.startswith(private_tmp) or "edgetool" in k}
    assert after == before
