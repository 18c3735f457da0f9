"""The refit set: export records the tensors some delta changes, the engine build marks exactly them, a switch
refits exactly them (TensorRT and pycuda replaced by the recording stand-ins of trt_fakes)."""

import json
import os
import shutil

import numpy as np
import pytest

from edgetool.cli import main
from edgetool.runtime.backends.base import BASE
from edgetool.runtime.bundle.reader import Bundle
from edgetool.runtime.bundle.refit_set import refit_set
from edgetool.runtime.errors import BundleError, SwitchError

import trt_fakes

onnx = pytest.importorskip("onnx")

TOUCHES = [["s2.b1.conv1.weight", "fc.bias"], ["stem.weight", "stem.bias", "s3.b1.down.scale"]]
CHANGED = ["stem.weight", "s2.b1.conv1.weight", "stem.bias", "s3.b1.down.scale", "fc.bias"]  # layout order


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    root = tmp_path_factory.mktemp("refitset")
    return {codec: trt_fakes.touched_bundle(root / codec, TOUCHES, codec=codec, seed=3) for codec in ("zstd", "sparse")}


@pytest.fixture
def bundle(made, tmp_path):
    dst = str(tmp_path / "bundle")
    shutil.copytree(made["zstd"], dst)
    return dst


def edit(path, change):
    mpath = os.path.join(path, "manifest.json")
    with open(mpath) as f:
        m = json.load(f)
    change(m)
    with open(mpath, "w") as f:
        json.dump(m, f)


def test_export_records_exactly_the_tensors_some_delta_changes(made):
    for path in made.values():
        b = Bundle.open(path)
        assert b.manifest["refit"]["changed"] == CHANGED
        assert b.model.changed == tuple(CHANGED)
        per_delta = [b.layout.changed_tensors([b.read_delta(k)]) for k in range(b.num_superclasses)]
        assert [sorted(d) for d in per_delta] == [sorted(t) for t in TOUCHES]
        assert refit_set(b) == (CHANGED, True)


def test_a_bundle_without_the_field_loads_and_computes_the_set(bundle):
    edit(bundle, lambda m: m["refit"].pop("changed"))
    b = Bundle.open(bundle)
    assert b.model.changed is None
    assert refit_set(b) == (CHANGED, False)


BAD = [
    ("not_a_list", "stem.weight", "refit.changed: 'stem.weight' is not a list"),
    ("null", None, "refit.changed: missing is not a list"),
    ("unknown_name", ["stem.weight", "conv9.weight"], "refit.changed[1]: 'conv9.weight' is not one of refit.tensors"),
    ("not_text", [3], "refit.changed[0]: 3 is not one of refit.tensors"),
    ("twice", ["stem.weight", "stem.weight"], "names a tensor twice, or not in the order of refit.tensors"),
    ("out_of_order", ["fc.bias", "stem.weight"], "names a tensor twice, or not in the order of refit.tensors"),
    ("too_many", ["stem.weight"] * 1000, "1000 names for 29 refit tensors"),
]


@pytest.mark.parametrize("value, needle", [c[1:] for c in BAD], ids=[c[0] for c in BAD])
def test_a_malformed_set_is_refused_with_one_line(bundle, capsys, value, needle):
    def change(m):
        m["refit"]["changed"] = value

    edit(bundle, change)
    with pytest.raises(BundleError, match="manifest.json"):
        Bundle.open(bundle)
    with pytest.raises(SystemExit) as code:
        main(["inspect", bundle])
    err = capsys.readouterr().err.strip().splitlines()
    assert code.value.code != 0 and len(err) == 1 and err[0].startswith("error: "), err
    assert needle in err[0], err[0]


@pytest.mark.parametrize("codec", ["zstd", "sparse"])
def test_a_delta_outside_the_recorded_set_is_refused_before_it_is_applied(made, tmp_path, codec):
    path = str(tmp_path / "b")
    shutil.copytree(made[codec], path)
    edit(path, lambda m: m["refit"].update(changed=[n for n in CHANGED if n != "fc.bias"]))
    b = Bundle.open(path)
    why = r"deltas/a\..*changes 1 tensor\(s\) that the manifest's refit.changed leaves out: fc.bias"
    with pytest.raises(BundleError, match=why):
        b.read_delta(0, sparse=True)
    assert b.read_delta(1).any()  # delta 1 keeps to the set


def engine_build(monkeypatch, capsys, bundle, version, *args):
    trt = trt_fakes.install(monkeypatch, version)
    with pytest.raises(SystemExit) as code:
        main(["engine", "build", bundle, "--device-profile", "orin-agx"] + list(args))
    out = capsys.readouterr()
    assert code.value.code == 0, out.err
    ((network, config),) = trt.builds
    return network, config


@pytest.mark.parametrize("version", ["10.3.0", "11.4.0"])
def test_engine_build_marks_exactly_the_recorded_set(monkeypatch, capsys, bundle, version):
    def no_delta_read(self, index, sparse=False):
        raise AssertionError("the recorded set needs no delta read")

    with monkeypatch.context() as m:
        m.setattr(Bundle, "read_delta", no_delta_read)
        network, config = engine_build(monkeypatch, capsys, bundle, version)
    assert network.marked == CHANGED and config.flags == ["REFIT_INDIVIDUAL"]
    assert Bundle.open(bundle).manifest["engines"][0]["refit"] == "individual"
    edit(bundle, lambda m: m["refit"].pop("changed"))  # an older bundle: the set comes from its deltas
    network, _ = engine_build(monkeypatch, capsys, bundle, version)
    assert network.marked == CHANGED
    network, config = engine_build(monkeypatch, capsys, bundle, version, "--refit-all")
    assert network.marked == [] and config.flags == ["REFIT"]


def test_an_empty_set_keeps_the_engine_refittable(monkeypatch, capsys, bundle):
    edit(bundle, lambda m: m["refit"].update(changed=[]))  # as a flat bundle's: no delta changes anything
    network, config = engine_build(monkeypatch, capsys, bundle, "10.3.0")
    assert network.marked == [] and config.flags == ["REFIT"]
    assert Bundle.open(bundle).manifest["engines"][0]["refit"] == "all"


def test_tensorrt_8_refits_all_with_no_marking(monkeypatch, capsys, bundle):
    network, config = engine_build(monkeypatch, capsys, bundle, "8.6.1")
    assert network.marked == [] and config.flags == ["INT8", "FP16", "REFIT"]


def expected_values(b, target, form):
    from edgetool.runtime.trt.weight_forms import host_arrays

    base = b.layout.pack(dict(_initializers(b)))
    packed = base if target == BASE else b.layout.apply_delta(base, b.read_delta(target))
    return host_arrays(b.layout, packed, form)


def _initializers(b):
    from edgetool.runtime.bundle.onnx_weights import read_initializers

    inits = read_initializers(b.base_onnx())
    return {t.name: inits[t.name] for t in b.layout.tensors}


@pytest.mark.parametrize(
    "version, form, refit_all",
    [("8.6.1", "qdq-float", True), ("10.3.0", "int8", False), ("10.3.0", "int8", True), ("11.4.0", "int8", False)],
)
def test_a_switch_refits_exactly_the_recorded_set(monkeypatch, bundle, version, form, refit_all):
    from edgetool.runtime.trt.backend import TrtBackend
    from edgetool.runtime.trt.weight_forms import engine_name

    if refit_all:  # an engine that could refit every tensor: still only the set is handed over
        monkeypatch.setattr("edgetool.runtime.trt.backend.build_engine", _refit_all_build)
    trt_fakes.install(monkeypatch, version)
    b = Bundle.open(bundle)
    names = [engine_name(b.layout.by_name[n], form) for n in CHANGED]
    with TrtBackend.from_bundle(b) as be:
        assert be.form == form and [n for _, n in be.plan] == names
        engine = be.sub.engine
        assert len(engine.refittable) == (len(engine.plan["weights"]) if refit_all else len(CHANGED))
        for target in [0, 1, BASE, 1]:
            be.switch(target)
            given = engine.refits[-1]
            assert list(given) == names
            want = expected_values(b, target, form)
            for name in names:
                np.testing.assert_array_equal(given[name].reshape(want[name].shape), want[name])


def _refit_all_build(*args, **kwargs):
    from edgetool.runtime.trt import loader

    kwargs["refit_only"] = None
    return loader.build_engine(*args, **kwargs)


def test_weights_tensorrt_asks_for_outside_the_set_get_their_base_values(monkeypatch, bundle):
    from edgetool.runtime.trt.backend import TrtBackend

    # setting a conv's weight makes this TensorRT ask for its bias, which no delta changes
    trt_fakes.install(monkeypatch, "10.3.0", fused={"s2.b1.conv1.weight": ["s2.b1.conv1.bias"]})
    monkeypatch.setattr("edgetool.runtime.trt.backend.build_engine", _refit_all_build)
    b = Bundle.open(bundle)
    base_bias = _initializers(b)["s2.b1.conv1.bias"]
    with TrtBackend.from_bundle(b) as be:
        assert list(be.companions) == ["s2.b1.conv1.bias"]
        for target in [0, 1, BASE]:
            be.switch(target)
            given = be.sub.engine.refits[-1]
            assert list(given) == CHANGED + ["s2.b1.conv1.bias"]
            np.testing.assert_array_equal(given["s2.b1.conv1.bias"], base_bias)


def test_an_engine_that_cannot_refit_a_recorded_tensor_is_refused(monkeypatch, bundle):
    from edgetool.runtime.trt.backend import TrtBackend
    from edgetool.runtime.errors import BackendError
    from edgetool.runtime.trt import loader

    def fewer(*args, **kwargs):
        kwargs["refit_only"] = kwargs["refit_only"][1:]  # stem.weight left out
        return loader.build_engine(*args, **kwargs)

    trt_fakes.install(monkeypatch, "10.3.0")
    monkeypatch.setattr("edgetool.runtime.trt.backend.build_engine", fewer)
    with pytest.raises(BackendError, match="cannot refit 1 tensor.*stem.weight"):
        TrtBackend.from_bundle(Bundle.open(bundle))


def test_a_switch_to_a_delta_outside_the_set_keeps_the_network_serving(monkeypatch, bundle):
    from edgetool.runtime.trt.backend import TrtBackend

    edit(bundle, lambda m: m["refit"].update(changed=[n for n in CHANGED if n != "fc.bias"]))
    trt_fakes.install(monkeypatch, "10.3.0")
    with TrtBackend.from_bundle(Bundle.open(bundle)) as be:
        be.switch(1)
        refits = len(be.sub.engine.refits)
        with pytest.raises(SwitchError, match="still serving subclass network 1.*fc.bias"):
            be.switch(0)
        assert be.current == 1 and len(be.sub.engine.refits) == refits


def test_inspect_shows_the_refit_set(capsys, bundle):
    with pytest.raises(SystemExit):
        main(["inspect", bundle])
    (line,) = [x for x in capsys.readouterr().out.splitlines() if x.startswith("refit ")]
    assert line.startswith("refit       29 tensors, ") and line.endswith("; 5 changed by some delta (refit.changed)")
    edit(bundle, lambda m: m["refit"].pop("changed"))
    with pytest.raises(SystemExit):
        main(["inspect", bundle])
    (line,) = [x for x in capsys.readouterr().out.splitlines() if x.startswith("refit ")]
    assert line.endswith(" bytes packed")
