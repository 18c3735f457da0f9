"""Fault injection at each TensorRT switch step, on the CPU.

The steps and their rollback are the product's own code: ``TrtBackend.switch`` / ``_apply``
(stage the delta, host-to-device copy, add kernel, set weights, refit), the shared
``Backend._recover``, ``DeviceDeltaApplier.apply`` and ``PackedWeights``.  Only what needs a
GPU is replaced, here in the test: device memory by host arrays, the CUDA copy calls by
array copies, the add kernel by its numpy oracle (``reference_apply``), and the refitter by
one that copies the weights it points at when it refits, as TensorRT does.  The backend is built
through its public constructor with trt_fakes' TensorRT module and cuda_fakes' pycuda and engine,
so ``close`` is checked to free every buffer the runners allocated.  The tests on a
real device are ``tests/test_faults.py::test_tensorrt_failed_switch_step_keeps_previous_network``.
"""

import re
from types import SimpleNamespace

import numpy as np
import pytest

from edgetool.runtime.bundle import packed as weights_mod
from edgetool.runtime.backends.base import BASE
from edgetool.runtime.bundle.reader import Superclass
from edgetool.runtime.errors import SwitchError
from edgetool.runtime.bundle.sparse_codec import SparseDelta, decode_sparse, encode
from edgetool.runtime.trt import delta_apply
from edgetool.runtime.trt.backend import TrtBackend
from edgetool.runtime.trt.delta_apply import VEC, DeviceDeltaApplier, launch_geometry, reference_apply
from edgetool.runtime.bundle.weights import PackedLayout, TensorSpec

import cuda_fakes
import trt_fakes


class DeltaBundle:
    """What a backend reads from a bundle: the layout, the hierarchy, decoded deltas and the I/O names."""

    input = {"name": "input", "shape": [1, 2, 3]}
    output_name, head_width = "logits", 4
    model = SimpleNamespace(changed=None)  # no recorded refit set: every tensor the engine can refit

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
    """Refitting copies the weights the engine was pointed at (device buffer or host arrays: *source*, set by the
    test once the backend holds them)."""

    def __init__(self, engine, logger):
        self.names, self.source, self.engine = engine.refittable, None, None

    def get_all_weights(self):
        return list(self.names)

    def get_missing_weights(self):
        return []

    def set_named_weights(self, name, w, location=None):
        return True

    def refit_cuda_engine_async(self, stream_handle):
        return self.refit_cuda_engine()

    def refit_cuda_engine(self):
        self.engine = self.source().copy()
        return True


class HostApplier(DeviceDeltaApplier):
    """The real applier's staging, copies and rollback on host arrays: HostCuda, the kernel's numpy oracle, and a
    tensor's "pointer" its offset in the packed buffer."""

    def __init__(self, layout, base, stream=None):
        self.cuda, self.layout, self.stream, self.fn = HostCuda(), layout, stream, host_kernel
        self.base, self.delta, self.weights = base.copy(), np.zeros_like(base), base.copy()
        self.host_delta = np.zeros_like(base)
        self.n_int8_vec = layout.int8_nbytes // VEC
        self.n_vec, self.blocks = launch_geometry(layout.total_nbytes)

    def pointer(self, name):
        return self.layout.by_name[name].offset

    def free(self):
        self.freed = True


def host_kernel(base, delta, out, n_int8_vec, n_vec, block, grid, stream):
    assert int(n_vec) * VEC == base.size
    out[...] = reference_apply(base, delta, int(n_int8_vec) * VEC)


def make(monkeypatch, device_weights, sparse, mode="one-engine", seed=0):
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
    # TensorRT 10 with int8 weights refits from the device buffer; 8.6 from host arrays
    trt = trt_fakes.fake_tensorrt("10.3.0" if device_weights else "8.6.1")
    trt.Refitter = Refitter
    cuda = cuda_fakes.Cuda()
    monkeypatch.setattr(delta_apply, "DeviceDeltaApplier", HostApplier)
    names = [t.name for t in layout.tensors]

    def engine():  # an engine that runs (cuda_fakes) and can refit every packed tensor
        e = cuda_fakes.Engine(cuda, (1, 2, 3), 4)
        e.refittable = names
        return e

    be = TrtBackend(DeltaBundle(layout, deltas), trt, cuda, engine, {}, base, "int8", mode=mode)
    monkeypatch.undo()
    assert be.device_weights == device_weights and len(be.plan) == len(names)
    be.refitter.source = (lambda: be.applier.weights) if device_weights else (lambda: be.host)
    expected = {BASE: base}
    for k, d in enumerate(dense):
        expected[k] = layout.apply_delta(base, d)
    return be, expected, cuda


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
    be, expected, _ = make(monkeypatch, device_weights, sparse)
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
    be, expected, _ = make(monkeypatch, True, True, mode="two-engine")
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


@pytest.mark.parametrize("mode", ["one-engine", "two-engine"])
def test_close_frees_every_buffer_the_runners_allocated(monkeypatch, mode):
    be, expected, cuda = make(monkeypatch, True, False, mode=mode)
    assert len(cuda.live()) == (4 if mode == "two-engine" else 2)  # input and logits per engine, while open
    x = np.ones((2, 1, 2, 3), np.float32)
    assert be.infer(x).shape == (2, 4)  # the backend's logits come from the runner's output by name
    be.close()
    assert cuda.live() == [] and len(cuda.freed) == len(cuda.allocated) and be.applier is None
    assert all(r.context is None for r in be.runners())
