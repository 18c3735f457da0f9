"""End-to-end spine: exact deltas, runtime == standalone session, CLI, bad input."""

import json
import os

import numpy as np
import pytest


torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from edgetool.export.onnx_export import from_qatnet  # noqa: E402
from edgetool.runtime.backends.base import BASE  # noqa: E402
from edgetool.runtime.backends.ort import OrtBackend, plain_session  # noqa: E402
from edgetool.runtime.bundle.reader import Bundle  # noqa: E402
from edgetool.runtime.errors import SwitchError  # noqa: E402
from edgetool.runtime.bundle.onnx_weights import read_initializers  # noqa: E402


def test_delta_plus_base_equals_subclass_codes_bit_for_bit(tiny_run, tiny_bundle):
    b = Bundle.open(tiny_bundle)
    base = read_initializers(b.base_onnx())
    base_codes = tiny_run.super_qat().int8_codes()
    for name, q in base_codes.items():  # base.onnx holds the superclass network's own codes
        np.testing.assert_array_equal(base[name], q)
    base_buf = b.layout.pack({t.name: base[t.name] for t in b.layout.tensors})
    for k in range(b.num_superclasses):
        sub = tiny_run.sub_qat(k)
        codes = sub.int8_codes()
        delta = b.read_delta(k)
        rebuilt = b.layout.views(b.layout.apply_delta(base_buf, delta))
        changed = 0
        for name, q in codes.items():
            assert rebuilt[name].dtype == np.int8
            np.testing.assert_array_equal(rebuilt[name], q, err_msg="{} of subclass {}".format(name, k))
            changed += int((q != base_codes[name]).sum())
        assert changed > 0, "the fine-tune changed no int8 code; the test would prove nothing"
        for name, bias in sub.float_tensors().items():
            np.testing.assert_allclose(rebuilt[name], bias, rtol=0, atol=1e-6)


def test_runtime_logits_equal_standalone_session(tiny_run, tiny_bundle):
    b = Bundle.open(tiny_bundle)
    x = b.samples()
    assert x is not None and len(x) >= 4
    shape, head = b.input["shape"], b.head_width
    with OrtBackend(b) as be:
        nets = [(BASE, tiny_run.super_qat())] + [(k, tiny_run.sub_qat(k)) for k in range(b.num_superclasses)]
        # base -> sub0 -> sub1 -> base -> ...: every switch lands on the exact network
        for target, net in nets + nets[::-1]:
            be.switch(target)
            got = be.infer(x)
            ref = plain_session(from_qatnet(net, shape, head, refit_inputs=False).SerializeToString()).run(
                None, {"input": x}
            )[0]
            assert got.shape == ref.shape == (len(x), head)
            assert np.abs(got - ref).max() <= 1e-5, (target, np.abs(got - ref).max())


def test_torch_qat_matches_exported_onnx(tiny_run, tiny_bundle):
    b = Bundle.open(tiny_bundle)
    x = b.samples()
    net = tiny_run.sub_qat(1)
    with torch.no_grad():
        t = net(torch.from_numpy(x)).numpy()
    with OrtBackend(b) as be:
        be.switch(1)
        o = be.infer(x)
    # Float order of operations differs slightly; the int8 grid makes rare 1-LSB flips possible.
    assert np.abs(t - o).max() < 0.05 * max(1.0, np.abs(t).max())
    np.testing.assert_array_equal(t[:, :3].argmax(1), o[:, :3].argmax(1))


def test_base_onnx_is_trt_style_qdq(tiny_bundle):
    m = onnx.load(os.path.join(tiny_bundle, "base.onnx"))
    assert m.opset_import[0].version >= 13
    inits = {t.name: onnx.numpy_helper.to_array(t) for t in m.graph.initializer}
    dq = [n for n in m.graph.node if n.op_type == "DequantizeLinear"]
    q = [n for n in m.graph.node if n.op_type == "QuantizeLinear"]
    assert q and dq
    for n in dq + q:
        zp = inits[n.input[2]]
        assert not zp.any(), "zero-point must be 0"
        assert zp.dtype == np.int8
    weight_dq = [n for n in dq if n.input[0].endswith(".weight")]
    assert len(weight_dq) == len([n for n in m.graph.node if n.op_type in ("Conv", "Gemm")])
    for n in weight_dq:
        axis = [a.i for a in n.attribute if a.name == "axis"]
        assert axis == [0]
        w, s = inits[n.input[0]], inits[n.input[1]]
        assert w.dtype == np.int8 and w.min() >= -127
        assert s.shape == (w.shape[0],)
    assert not [n for n in m.graph.node if n.op_type == "BatchNormalization"]


def test_policies_agree(tiny_bundle):
    from edgetool.runtime.classifier import SuperSubClassifier

    b = Bundle.open(tiny_bundle)
    x = b.samples()
    with OrtBackend(b) as be:
        results = {}
        for policy in ("per-image", "batched", "topk"):
            be.switch_count = 0
            preds = SuperSubClassifier(be, policy=policy, gate=0.0).classify(x)
            results[policy] = ([(p.superclass, p.subclass) for p in preds], be.switch_count)
        assert results["per-image"][0] == results["batched"][0] == results["topk"][0]
        # batched switches once per superclass group, per-image twice per image
        assert results["batched"][1] <= 1 + b.num_superclasses < results["per-image"][1]


def test_failed_switch_keeps_previous_weights(bundle_copy):
    b = Bundle.open(bundle_copy)
    x = b.samples()
    with OrtBackend(b) as be:
        be.switch(0)
        before = be.infer(x)
        path = os.path.join(bundle_copy, b.deltas[1]["file"])
        data = bytearray(open(path, "rb").read())
        data[len(data) // 2] ^= 0xFF
        open(path, "wb").write(bytes(data))
        with pytest.raises(SwitchError) as exc:
            be.switch(1)
        assert b.deltas[1]["file"] in str(exc.value)
        assert be.current == 0
        np.testing.assert_array_equal(be.infer(x), before)
        be.switch(BASE)
        be.switch(0)
        np.testing.assert_array_equal(be.infer(x), before)


def _one_error_line(proc, must_contain):
    assert proc.returncode != 0
    lines = [line for line in proc.stderr.strip().splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    assert lines[0].startswith("error:")
    assert must_contain in lines[0], lines[0]


@pytest.mark.parametrize("damage", ["flip", "truncate"])
def test_cli_corrupt_delta_one_line_error(run_cli, bundle_copy, sample_pngs, damage):
    rel = json.load(open(os.path.join(bundle_copy, "manifest.json")))["deltas"][2]["file"]
    path = os.path.join(bundle_copy, rel)
    data = bytearray(open(path, "rb").read())
    if damage == "flip":
        data[7] ^= 0x01
    else:
        data = data[: len(data) - 10]
    open(path, "wb").write(bytes(data))
    for cmd in (["inspect", bundle_copy], ["classify", bundle_copy] + sample_pngs[:2]):
        _one_error_line(run_cli(*cmd), rel)


def test_cli_manifest_hash_mismatch(run_cli, bundle_copy, sample_pngs):
    mpath = os.path.join(bundle_copy, "manifest.json")
    m = json.load(open(mpath))
    m["base"]["sha256"] = "0" * 64
    json.dump(m, open(mpath, "w"))
    _one_error_line(run_cli("classify", bundle_copy, sample_pngs[0]), "base.onnx")


def test_cli_bad_paths(run_cli, tiny_bundle, tmp_path):
    _one_error_line(run_cli("classify", str(tmp_path / "nope"), "x.png"), "no such bundle")
    _one_error_line(run_cli("classify", tiny_bundle, str(tmp_path / "missing.png")), "missing.png")
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not an image")
    _one_error_line(run_cli("classify", tiny_bundle, str(bad)), "bad.png")
    notjson = tmp_path / "b"
    notjson.mkdir()
    (notjson / "manifest.json").write_text("{")
    _one_error_line(run_cli("inspect", str(notjson)), "manifest.json")


def test_cli_classify_prints_superclass_class_confidence(run_cli, tiny_bundle, sample_pngs):
    proc = run_cli("classify", tiny_bundle, *sample_pngs, "--json")
    assert proc.returncode == 0, proc.stderr
    rows = [json.loads(line) for line in proc.stdout.splitlines()]
    assert len(rows) == len(sample_pngs)
    b = Bundle.open(tiny_bundle)
    names = {s.name: s.subclasses for s in b.superclasses}
    for r in rows:
        assert r["class"] in names[r["superclass"]]
        assert 0.0 < r["confidence"] <= 1.0
    table = run_cli("classify", tiny_bundle, *sample_pngs, "--policy", "per-image")
    assert table.returncode == 0
    assert "superclass" in table.stdout and rows[0]["class"] in table.stdout


def test_cli_export_and_archive(run_cli, tiny_run, tmp_path):
    out = tmp_path / "exported"
    proc = run_cli("export", tiny_run.path, "--out", out, "--codec", "zstd", "--archive")
    assert proc.returncode == 0, proc.stderr
    b = Bundle.open(str(out) + ".tar.gz")
    assert b.deltas[0]["file"].endswith(".zst")
    assert b.read_delta(0).size == b.layout.total_nbytes
    _one_error_line(run_cli("export", tmp_path / "norun", "--out", tmp_path / "x"), "norun")


def test_sticky_policy_on_a_video_like_stream(tiny_bundle):
    from edgetool.runtime.classifier import SuperSubClassifier

    b = Bundle.open(tiny_bundle)
    x = b.samples()
    frames = np.repeat(x[:2], 10, axis=0)  # two "scenes" of 10 identical frames
    with OrtBackend(b) as be:
        per_image = SuperSubClassifier(be, policy="per-image").classify(frames)
        n_per_image = be.switch_count
        be.switch_count = 0
        sticky = SuperSubClassifier(be, policy="sticky", gate=0.0, interval=5).classify(frames)
        n_sticky = be.switch_count
    assert [(p.superclass, p.subclass) for p in sticky] == [(p.superclass, p.subclass) for p in per_image]
    assert n_sticky <= 8 < n_per_image  # re-routes at frames 0, 5, 10, 15 only
