"""EngineRunner through its public constructor, on the host-memory pycuda and engine of cuda_fakes: ``activate``
allocates, ``deactivate`` frees every buffer it allocated, ``infer`` takes and returns arrays by tensor name, on
both I/O paths (tensor names, TensorRT >= 8.5; binding indices, 8.2) and with the DLA's fixed batch."""

from types import SimpleNamespace

import numpy as np
import pytest

from edgetool.runtime.errors import BackendError
from edgetool.runtime.trt.runner import EngineRunner

import cuda_fakes

TRT = SimpleNamespace()  # the runner reaches TensorRT only through the engine it is given
SHAPE, HEAD = (1, 2, 3), 4


def runner(cuda, engine, max_batch=8, static=False):
    return EngineRunner(engine, TRT, cuda, cuda.Stream(), "input", "logits", SHAPE, HEAD, max_batch, static=static)


@pytest.mark.parametrize("named", [True, False], ids=["tensor-names", "binding-indices"])
@pytest.mark.parametrize("features", [0, 5])
def test_deactivate_frees_every_buffer_activate_allocated(named, features):
    cuda = cuda_fakes.Cuda()
    engine = cuda_fakes.Engine(cuda, SHAPE, HEAD, features=features, named=named)
    r = runner(cuda, engine)
    assert cuda.allocated == [] and r.context is None  # the constructor allocates nothing
    for _ in range(2):  # a runner activates again after a deactivate
        with r:
            assert len(cuda.live()) == (3 if features else 2) and r.context is not None
        assert cuda.live() == [] and r.context is None and r.engine is engine  # an engine given is kept
    assert len(cuda.freed) == len(cuda.allocated) == 2 * (3 if features else 2) and engine.contexts == 2


@pytest.mark.parametrize("named", [True, False], ids=["tensor-names", "binding-indices"])
def test_infer_takes_and_returns_arrays_by_name(named):
    cuda = cuda_fakes.Cuda()
    engine = cuda_fakes.Engine(cuda, SHAPE, HEAD, features=5, named=named)
    x = np.random.RandomState(0).rand(3, *SHAPE).astype(np.float32)
    flat = x.reshape(3, -1)
    with runner(cuda, engine) as r:
        out = r.infer({"input": x})
        assert sorted(out) == ["features", "logits"]
        np.testing.assert_allclose(out["logits"], flat @ engine.weights, rtol=1e-6)
        np.testing.assert_allclose(out["features"], flat[:, :5] * 2, rtol=1e-6)
        assert list(r.infer({"input": x}, ["logits"])) == ["logits"]
        logits, feats = r.run(x, features=True)  # the backend's helper
        np.testing.assert_array_equal(logits, out["logits"])
        np.testing.assert_array_equal(r.run(x), out["logits"])
        with pytest.raises(BackendError, match="takes 'input'"):
            r.infer({"x": x})
        with pytest.raises(BackendError, match="exceeds the engine's max batch 8"):
            r.infer({"input": np.zeros((9,) + SHAPE, np.float32)})
    with pytest.raises(BackendError, match="not active"):
        r.infer({"input": x})


def test_an_engine_without_features_says_so():
    cuda = cuda_fakes.Cuda()
    with runner(cuda, cuda_fakes.Engine(cuda, SHAPE, HEAD)) as r:
        with pytest.raises(BackendError, match="no \\['features'\\] output"):
            r.run(np.zeros((1,) + SHAPE, np.float32), features=True)


def test_a_maker_is_called_in_activate_and_its_engine_dropped_in_deactivate():
    cuda, made = cuda_fakes.Cuda(), []

    def make():
        made.append(cuda_fakes.Engine(cuda, SHAPE, HEAD))
        return made[-1]

    r = runner(cuda, make)
    assert made == [] and r.engine is None
    with r:
        assert r.engine is made[0]
        assert r.activate() is r and len(made) == 1 and len(cuda.allocated) == 2  # activating twice: once
    assert r.engine is None and cuda.live() == []
    with r:
        assert len(made) == 2


def test_a_static_batch_engine_runs_in_padded_runs_by_name():
    cuda = cuda_fakes.Cuda()
    engine = cuda_fakes.Engine(cuda, SHAPE, HEAD, features=2)
    x = np.random.RandomState(1).rand(5, *SHAPE).astype(np.float32)
    with runner(cuda, engine, max_batch=2, static=True) as r:
        out = r.infer({"input": x})
    np.testing.assert_allclose(out["logits"], x.reshape(5, -1) @ engine.weights, rtol=1e-6)
    assert out["features"].shape == (5, 2) and cuda.live() == []


def test_a_failed_activate_frees_what_it_allocated():
    cuda = cuda_fakes.Cuda()
    engine = cuda_fakes.Engine(cuda, SHAPE, HEAD, named=False, names=("input", "other"))
    r = runner(cuda, engine)
    with pytest.raises(BackendError, match="bindings are not 'input' -> 'logits'"):
        r.activate()
    assert cuda.allocated and cuda.live() == [] and r.context is None
