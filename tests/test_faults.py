"""Fault injection: every step of a switch, and kill -9 at each step of an export."""

import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from edgetool.runtime.bundle import codecs, packed, safeio, sparse_codec
from edgetool.runtime.backends.base import BASE
from edgetool.runtime.bundle.reader import Bundle
from edgetool.runtime.errors import BackendError, BundleError, CodecError, EdgetoolError, SwitchError

pytest.importorskip("onnxruntime")
from edgetool.runtime.backends.ort import OrtBackend  # noqa: E402


class Once:
    """Call *fault* on the first *times* calls, then the original."""

    def __init__(self, original, fault, times=1):
        self.original, self.fault, self.left = original, fault, times

    def __call__(self, *args, **kwargs):
        if self.left:
            self.left -= 1
            return self.fault(*args, **kwargs)
        return self.original(*args, **kwargs)


def _raise(exc):
    def fault(*args, **kwargs):
        raise exc

    return fault


def _half_applied(layout):
    def fault(base, delta, out=None):
        n = layout.int8_nbytes
        np.add(base[:n], delta[:n], out=out[:n])  # the int8 region is written...
        raise RuntimeError("injected fault after the int8 region")  # ...then the float region fails

    return fault


def _inject(monkeypatch, be, step, times):
    layout = be.layout
    if step == "read":
        fault = _raise(BundleError("x", "injected I/O error"))
        monkeypatch.setattr(safeio, "read_capped_keyed", Once(safeio.read_capped_keyed, fault, times))
    elif step == "verify":
        monkeypatch.setattr(
            "edgetool.runtime.bundle.reader.sha256_bytes", Once(lambda d: "0" * 64, lambda d: "1" * 64, times)
        )
    elif step == "decode":
        monkeypatch.setattr(codecs, "decode", Once(codecs.decode, _raise(CodecError("injected decode error")), times))
    elif step == "apply-int8":
        monkeypatch.setattr(layout, "apply_delta", Once(layout.apply_delta, _half_applied(layout), times))
    elif step == "apply-float":

        def after_all(base, delta, out=None):
            layout.__class__.apply_delta(layout, base, delta, out=out)
            raise RuntimeError("injected fault after every region")

        monkeypatch.setattr(layout, "apply_delta", Once(layout.apply_delta, after_all, times))
    elif step == "sparse-decode":
        fault = _raise(CodecError("injected sparse decode error"))
        monkeypatch.setattr(sparse_codec, "decode_sparse", Once(sparse_codec.decode_sparse, fault, times))
    elif step in ("scatter-part", "scatter-done"):
        real = packed.scatter_add

        def scatter_then_fail(region, positions, values):
            k = positions.size // 2 if step == "scatter-part" else positions.size
            real(region, positions[:k], values[:k])  # codes written in place, then the fault
            raise RuntimeError("injected fault in the scatter-add ({} of {} codes written)".format(k, positions.size))

        monkeypatch.setattr(packed, "scatter_add", Once(real, scatter_then_fail, times))


@pytest.fixture()
def served(tiny_bundle):
    b, x, logits = _served(tiny_bundle, tiny_bundle)
    with OrtBackend(b) as be:
        yield be, x, logits
    b.close()


def _served(path, reference):
    """An ONNX Runtime backend on the bundle at *path* (a fresh reader), and the logits of
    every network of the bundle at *reference* (the same networks, whatever the codec)."""
    b = Bundle.open(reference)
    x = b.samples()
    with OrtBackend(b) as ref:
        logits = {BASE: ref.infer(x)}
        for k in range(b.num_superclasses):
            ref.switch(k)
            logits[k] = ref.infer(x)
    b.close()
    # A fresh reader: one that served every delta before does not hash an unchanged file again.
    return Bundle.open(path), x, logits


@pytest.mark.parametrize("step", ["read", "verify", "decode", "apply-int8", "apply-float"])
def test_failed_switch_step_keeps_previous_network_bit_exact(served, monkeypatch, step):
    _check_failed_step(served, monkeypatch, step)


def _check_failed_step(served, monkeypatch, step):
    be, x, logits = served
    be.switch(0)
    _inject(monkeypatch, be, step, times=1)
    with pytest.raises(SwitchError) as exc:
        be.switch(1)
    assert "still serving subclass network 0" in str(exc.value), str(exc.value)
    assert be.current == 0
    np.testing.assert_array_equal(be.infer(x), logits[0])
    assert not be.switch(0)  # it really is serving 0
    monkeypatch.undo()
    assert be.switch(1)
    np.testing.assert_array_equal(be.infer(x), logits[1])


def test_apply_and_restore_fail_goes_back_to_base(served, monkeypatch):
    be, x, logits = served
    be.switch(0)
    _inject(monkeypatch, be, "apply-int8", times=2)  # the switch and the restore of network 0 both fail
    with pytest.raises(SwitchError) as exc:
        be.switch(1)
    assert "the base network serves now" in str(exc.value)
    assert be.current == BASE
    np.testing.assert_array_equal(be.infer(x), logits[BASE])


def test_nothing_restorable_says_so_and_refuses_to_serve(served, monkeypatch):
    be, x, logits = served
    be.switch(0)

    def broken(delta):
        be.weights[:] = 7
        raise RuntimeError("injected device fault")

    monkeypatch.setattr(be, "_apply", broken)
    with pytest.raises(BackendError) as exc:
        be.switch(1)
    assert not isinstance(exc.value, SwitchError) and "no network serves" in str(exc.value)
    assert not be.serving
    with pytest.raises(BackendError, match="no network is serving"):
        be.infer(x)
    monkeypatch.undo()
    assert be.switch(BASE)
    np.testing.assert_array_equal(be.infer(x), logits[BASE])


EXPORT = """
import sys
from edgetool.toolchain.train.run import Run
Run.open(sys.argv[1], progress=False).export(sys.argv[2], codec=sys.argv[3])
"""


def _export(run_dir, out, codec, point=None):
    env = dict(os.environ, EDGETOOL_THREADS="1")
    if point:
        env["EDGETOOL_FAULT_KILL"] = point
    return subprocess.run(
        [sys.executable, "-c", EXPORT, run_dir, out, codec], env=env, capture_output=True, text=True, timeout=600
    )


def _delta_bytes(path):
    with Bundle.open(path) as b:
        return [b.read_delta(k).tobytes() for k in range(b.num_superclasses)], b.model.deltas[0].codec


@pytest.mark.slow
def test_kill_9_during_export_keeps_a_valid_bundle(tiny_run, tiny_bundle, tmp_path):
    """Re-export over a good bundle, killed at each step: OUT always opens as the old or the new bundle."""
    out = str(tmp_path / "bundle")
    shutil.copytree(tiny_bundle, out)
    old_codec = _delta_bytes(out)[1]
    new_codec = "zstd" if old_codec == "7z" else "7z"
    for point in ("export:file", "export:after-manifest", "export:before-rename", "export:after-rename"):
        proc = _export(tiny_run.path, out, new_codec, point)
        assert proc.returncode == -9, (point, proc.stderr[-2000:])
        raws, codec = _delta_bytes(out)  # opens and verifies every file
        assert codec == (new_codec if point == "export:after-rename" else old_codec), point
        if point == "export:after-rename":
            shutil.rmtree(out)
            shutil.copytree(tiny_bundle, out)
    leftovers = [e for e in os.listdir(str(tmp_path)) if e != "bundle"]
    proc = _export(tiny_run.path, out, new_codec)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert _delta_bytes(out)[1] == new_codec
    assert leftovers and [e for e in os.listdir(str(tmp_path)) if e != "bundle"] == []  # stale temp folders removed


@pytest.mark.slow
def test_kill_9_while_archiving_keeps_the_previous_archive(tiny_run, tiny_bundle, tmp_path):
    from edgetool.export.atomic import write_archive

    out = str(tmp_path / "bundle")
    shutil.copytree(tiny_bundle, out)
    archive = write_archive(out, out + ".tar.gz")
    before = _delta_bytes(archive)
    env = dict(os.environ, EDGETOOL_THREADS="1", EDGETOOL_FAULT_KILL="archive:member")

    def export():
        cmd = [sys.executable, "-m", "edgetool", "export", tiny_run.path, "--out", out, "--archive"]
        return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)

    proc = export()
    assert proc.returncode == -9, proc.stderr[-2000:]
    assert _delta_bytes(archive) == before  # the previous archive, whole
    _delta_bytes(out)  # the new bundle folder was complete before archiving began
    env.pop("EDGETOOL_FAULT_KILL")
    proc = export()
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert sorted(os.listdir(str(tmp_path))) == ["bundle", "bundle.tar.gz"]


def _trt_inject(monkeypatch, be, step):
    if step == "refit":
        monkeypatch.setattr(be, "_refit", Once(be._refit, _raise(SwitchError("injected refit failure"))))
    elif step == "add":
        fault = _raise(RuntimeError("injected kernel launch failure"))
        monkeypatch.setattr(be.applier, "fn", Once(be.applier.fn, fault))
    elif step == "copy":
        monkeypatch.setattr(
            be.applier.cuda,
            "memcpy_htod_async",
            Once(be.applier.cuda.memcpy_htod_async, _raise(RuntimeError("injected H2D copy failure"))),
        )


@pytest.mark.gpu
@pytest.mark.tensorrt
@pytest.mark.parametrize("step", ["copy", "add", "refit"])
def test_tensorrt_failed_switch_step_keeps_previous_network(tiny_bundle, monkeypatch, step):
    pytest.importorskip("tensorrt", reason="TensorRT is not installed (it ships with JetPack)")
    pytest.importorskip("pycuda.driver", reason="pycuda is not installed")
    from edgetool.runtime.trt.backend import TrtBackend

    try:
        b = Bundle.open(tiny_bundle)
        be = TrtBackend.from_bundle(b)
    except (EdgetoolError, ImportError) as exc:
        pytest.skip("no TensorRT device here: {}".format(exc))
    with be:
        if step != "refit" and not getattr(be, "device_weights", False):
            pytest.skip("this TensorRT uses host weights: no device copy or kernel step")
        x = b.samples()
        be.switch(0)
        before = be.infer(x)
        _trt_inject(monkeypatch, be, step)
        with pytest.raises(SwitchError, match="still serving subclass network 0"):
            be.switch(1)
        assert be.current == 0
        np.testing.assert_array_equal(be.infer(x), before)
        monkeypatch.undo()
        be.switch(1)
        be.switch(0)
        np.testing.assert_array_equal(be.infer(x), before)


def test_archive_holds_the_listed_files_and_the_signature(bundle_copy, tmp_path):
    from edgetool.export.atomic import write_archive

    with open(os.path.join(bundle_copy, "stray.txt"), "w") as f:
        f.write("not listed")
    with open(os.path.join(bundle_copy, "manifest.sig"), "w") as f:
        f.write('{"schema": "edgetool.signature/1"}')
    archive = write_archive(bundle_copy, str(tmp_path / "b.tar.gz"))  # the stray file is not archived
    import tarfile

    with tarfile.open(archive) as tar:
        names = [n.split("/", 1)[1] for n in tar.getnames()]
    assert names[0] == "manifest.json" and "manifest.sig" in names and "stray.txt" not in names
    with Bundle.open(archive) as b:
        assert b.read_delta(0).size == b.layout.total_nbytes
