"""Fault injection at each TensorRT switch step, on the CPU.

The steps and their rollback are the product's own code: ``TrtBackend.switch`` / ``_apply``
(stage the delta, host-to-device copy, add kernel, set weights, refit), the shared
``Backend._recover``, ``DeviceDeltaApplier.apply`` and ``PackedWeights``.  Only what needs a
GPU is replaced, here in the test: device memory by host arrays, the CUDA copy calls by
array copies, the add kernel by its numpy oracle (``reference_apply``), and the refitter by
one that copies the weights it points at when it refits, as TensorRT does.  The tests on a
real device are ``tests/test_faults.py::test_tensorrt_failed_switch_step_keeps_previous_network``.
"""

import re
from types import SimpleNamespace

import numpy as np
import pytest

from edgetool.runtime.bundle import packed as weights_mod
from edgetool.runtime.backends.base import BASE, Backend
from edgetool.runtime.bundle.reader import Superclass
from edgetool.runtime.errors import SwitchError
from edgetool.runtime.bundle.sparse_codec import SparseDelta, decode_sparse, encode
from edgetool.runtime.trt import delta_apply
from edgetool.runtime.trt.backend import TrtBackend
from edgetool.runtime.trt.delta_apply import VEC, DeviceDeltaApplier, launch_geometry, reference_apply
from edgetool.runtime.bundle.packed import PackedWeights
from edgetool.runtime.bundle.weights import PackedLayout, TensorSpec


class DeltaBundle:
    """What a backend reads from a bundle: the layout, the hierarchy and decoded deltas."""

    def __init__(self, layout, deltas):
        self.layout, self.deltas = layout, deltas
        self.superclasses = [Superclass(i, "s{}".format(i), ["a", "b"]) for i in range(len(deltas))]
        self.num_superclasses = len(deltas)

    def read_delta(self, k, sparse=False):
        d = self.deltas[k]
        return d if sparse or not isinstance(d, SparseDelta) else d.dense()


class HostCuda:
    """The pycuda.driver calls DeviceDeltaApplier makes, on host arrays standing in for device memory."""

    def memcpy_htod_async(self, dst, src, stream=None):
        dst[...] = src

    def memcpy_dtod_async(self, dst, src, n, stream=None):
        dst[:n] = src[:n]


class Refitter:
    """Refitting copies the weights the engine was pointed at (device buffer or host arrays)."""

    def __init__(self, source):
        self.source = source
        self.engine = source().copy()

    def set_named_weights(self, name, w, location=None):
        return True

    def refit_cuda_engine_async(self, stream_handle):
        return self.refit_cuda_engine()

    def refit_cuda_engine(self):
        self.engine = self.source().copy()
        return True


def host_kernel(base, delta, out, n_int8_vec, n_vec, block, grid, stream):
    assert int(n_vec) * VEC == base.size
    out[...] = reference_apply(base, delta, int(n_int8_vec) * VEC)


def make(device_weights, sparse, mode="one-engine", seed=0):
    layout = PackedLayout.build(
        [
            TensorSpec("c.weight", "weight", "int8", (16, 8, 3, 3), scale=[0.1] * 16),
            TensorSpec("c.bias", "bias", "float32", (16,)),
            TensorSpec("fc.weight", "weight", "int8", (4, 16), scale=[0.5] * 4),
        ]
    )
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, layout.total_nbytes, dtype=np.uint8)
    f = slice(layout.int8_nbytes, layout.total_nbytes)
    base[f] = np.frombuffer(rng.standard_normal(base[f].size // 4).astype(np.float32).tobytes(), np.uint8)
    dense = []
    for _ in range(3):
        d = np.where(rng.random(layout.total_nbytes) < 0.1, rng.integers(1, 256, layout.total_nbytes), 0)
        d = d.astype(np.uint8)
        d[f] = np.frombuffer((0.01 * rng.standard_normal(d[f].size // 4)).astype(np.float32).tobytes(), np.uint8)
        dense.append(d)
    deltas = [decode_sparse(encode(d.tobytes()), d.size) for d in dense] if sparse else dense
    assert all(isinstance(d, SparseDelta) == sparse for d in deltas)
    be = TrtBackend.__new__(TrtBackend)
    Backend.__init__(be, DeltaBundle(layout, deltas))
    be.mode, be.device_weights, be.form = mode, device_weights, "int8"
    be.base = base
    be.stream = SimpleNamespace(handle=0, synchronize=lambda: None)
    be.trt = SimpleNamespace(TensorLocation=SimpleNamespace(DEVICE="device"), Weights=lambda a: a)
    be.companions, be.fixed, be.sub_loaded = {}, None, BASE
    be.plan = [(t, t.name) for t in layout.tensors]
    if device_weights:
        a = DeviceDeltaApplier.__new__(DeviceDeltaApplier)
        a.cuda, a.layout, a.stream, a.fn = HostCuda(), layout, None, host_kernel
        a.base, a.delta, a.weights = base.copy(), np.zeros_like(base), base.copy()
        a.host_delta = np.zeros_like(base)
        a.n_int8_vec = layout.int8_nbytes // VEC
        a.n_vec, a.blocks = launch_geometry(layout.total_nbytes)
        be.applier = a
        be.device_entries = [(t.name, None) for t in layout.tensors]
        be.refitter = Refitter(lambda: a.weights)
    else:
        be.packed = PackedWeights(layout, base)
        be.host = be.packed.buf
        be.host_arrays = layout.views(be.host)
        be.refitter = Refitter(lambda: be.host)
    expected = {BASE: base}
    for k, d in enumerate(dense):
        expected[k] = layout.apply_delta(base, d)
    return be, expected


def inject(monkeypatch, be, step):
    if step == "stage":  # the delta half-written into the pinned staging buffer

        def half(staging, delta):
            staging[: staging.size // 2] = 0
            raise RuntimeError("injected fault while staging the delta")

        monkeypatch.setattr(delta_apply, "stage_delta", _once(half, delta_apply.stage_delta))
    elif step == "copy":

        def h2d_fails(*args, **kwargs):
            raise RuntimeError("injected H2D copy fault")

        monkeypatch.setattr(be.applier.cuda, "memcpy_htod_async", _once(h2d_fails, be.applier.cuda.memcpy_htod_async))
    elif step == "add":
        if be.device_weights:

            def half_kernel(base, delta, out, *args, **kwargs):
                out[: out.size // 3] = 0xFF  # some blocks ran
                raise RuntimeError("injected kernel fault")

            monkeypatch.setattr(be.applier, "fn", _once(half_kernel, be.applier.fn))
        else:
            real = weights_mod.scatter_add

            def half_scatter(region, positions, values):
                k = positions.size // 2
                real(region, positions[:k], values[:k])
                raise RuntimeError("injected fault in the host add")

            monkeypatch.setattr(weights_mod, "scatter_add", _once(half_scatter, real))
            monkeypatch.setattr(be.layout, "apply_delta", _once(_half_dense(be.layout), be.layout.apply_delta))
    elif step == "set-weights":
        monkeypatch.setattr(be.refitter, "set_named_weights", _once(lambda *a: False, be.refitter.set_named_weights))
    elif step == "refit":
        monkeypatch.setattr(be.refitter, "refit_cuda_engine", _once(lambda: False, be.refitter.refit_cuda_engine))


def _once(fault, original):
    state = {"left": 1}

    def call(*args, **kwargs):
        if state["left"]:
            state["left"] -= 1
            return fault(*args, **kwargs)
        return original(*args, **kwargs)

    return call


def _half_dense(layout):
    def fault(base, delta, out=None):
        n = layout.int8_nbytes
        np.add(base[:n], delta[:n], out=out[:n])
        raise RuntimeError("injected fault after the int8 region")

    return fault


DEVICE_STEPS = ["stage", "copy", "add", "set-weights", "refit"]
HOST_STEPS = ["add", "set-weights", "refit"]


@pytest.mark.parametrize("start", [BASE, 0], ids=["from-base", "from-subclass"])
@pytest.mark.parametrize("sparse", [True, False], ids=["sparse", "dense"])
@pytest.mark.parametrize(
    "device_weights,step",
    [(True, s) for s in DEVICE_STEPS] + [(False, s) for s in HOST_STEPS],
    ids=["device-" + s for s in DEVICE_STEPS] + ["host-" + s for s in HOST_STEPS],
)
def test_failed_step_keeps_previous_network_in_the_engine(monkeypatch, device_weights, step, sparse, start):
    be, expected = make(device_weights, sparse)
    be.switch(start, force=True)
    assert be.refitter.engine.tobytes() == expected[start].tobytes()
    inject(monkeypatch, be, step)
    with pytest.raises(SwitchError, match=re.escape("still serving " + be.describe(start))):
        be.switch(1)
    assert be.current == start and be.serving
    assert be.refitter.engine.tobytes() == expected[start].tobytes()  # what the engine computes with
    monkeypatch.undo()
    for k in [1, BASE, 2, 0, BASE]:
        be.switch(k)
        assert be.refitter.engine.tobytes() == expected[k].tobytes(), k


@pytest.mark.parametrize("step", ["copy", "refit"])
def test_two_engine_mode_after_a_failed_switch(monkeypatch, step):
    """The fixed base engine's shortcut never claims a subclass network the refitted engine lacks."""
    be, expected = make(True, True, mode="two-engine")
    be.switch(0)
    inject(monkeypatch, be, step)
    with pytest.raises(SwitchError):
        be.switch(1)
    assert be.sub_loaded == 0
    monkeypatch.undo()
    assert be.switch(BASE) and be.switch(0)  # back to 0 without moving weights: they are 0's
    assert be.refitter.engine.tobytes() == expected[0].tobytes()
    be.switch(1)
    assert be.sub_loaded == 1 and be.refitter.engine.tobytes() == expected[1].tobytes()
