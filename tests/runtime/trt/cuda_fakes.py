"""pycuda.driver on host memory that counts allocations and frees, and an engine whose context "runs" a fixed
linear head on what it was bound to, so the real ``EngineRunner`` runs on the CPU through both I/O paths.

:class:`Cuda` hands out :class:`Allocation` objects (host byte arrays; ``int()`` is their address in
``Cuda.memory``); :class:`Engine` has the tensor-name API (TensorRT >= 8.5) or, with ``named=False``, the
binding-index API of TensorRT 8.2.  Its logits are ``x @ W`` of the flattened input; its ``features`` output (when
asked for) the first *features* input values times two."""

from types import SimpleNamespace

import numpy as np


class Allocation:
    def __init__(self, cuda, nbytes):
        self.cuda, self.data, self.freed = cuda, np.zeros(nbytes, np.uint8), False

    def __int__(self):
        return id(self)

    def free(self):
        assert not self.freed, "freed twice"
        self.freed = True
        self.cuda.freed.append(self)


class Cuda:
    """The pycuda.driver calls EngineRunner makes."""

    def __init__(self):
        self.allocated, self.freed, self.memory = [], [], {}

    def mem_alloc(self, nbytes):
        a = Allocation(self, int(nbytes))
        self.allocated.append(a)
        self.memory[int(a)] = a
        return a

    def memcpy_htod_async(self, dst, src, stream=None):
        b = np.ascontiguousarray(src).reshape(-1).view(np.uint8)
        dst.data[: b.size] = b

    def memcpy_dtoh_async(self, dst, src, stream=None):
        dst.reshape(-1).view(np.uint8)[...] = src.data[: dst.nbytes]

    @staticmethod
    def Stream():
        return SimpleNamespace(handle=0, synchronize=lambda: None)

    def live(self):
        return [a for a in self.allocated if not a.freed]


class Context:
    def __init__(self, engine):
        self.engine, self.addresses, self.rows = engine, {}, 0

    def _run(self):
        cuda, e = self.engine.cuda, self.engine
        x = cuda.memory[self.addresses[e.names[0]]].data.view(np.float32)[: self.rows * e.width]
        x = x.reshape(self.rows, e.width)
        outs = {e.names[1]: x @ e.weights}
        if e.features:
            outs["features"] = x[:, : e.features] * 2
        for name, arr in outs.items():
            b = np.ascontiguousarray(arr, np.float32).reshape(-1).view(np.uint8)
            cuda.memory[self.addresses[name]].data[: b.size] = b
        return True


class NamedContext(Context):
    def set_tensor_address(self, name, address):
        self.addresses[name] = address

    def set_input_shape(self, name, shape):
        self.rows = shape[0]

    def execute_async_v3(self, stream_handle):
        return self._run()


class BindingContext(Context):
    def set_binding_shape(self, index, shape):
        self.rows = shape[0]

    def execute_async_v2(self, bindings, stream_handle):
        self.addresses = {name: bindings[i] for i, name in enumerate(self.engine.names)}
        return self._run()


class Engine:
    def __init__(self, cuda, input_shape, head, features=0, named=True, names=("input", "logits")):
        self.cuda, self.width, self.features, self.named = cuda, int(np.prod(input_shape)), features, named
        self.names = list(names) + (["features"] if features else [])
        self.weights = np.arange(self.width * head, dtype=np.float32).reshape(self.width, head) / 100
        self.contexts = 0
        if named:
            self.num_io_tensors = len(self.names)
        else:
            self.num_bindings = len(self.names)

    def create_execution_context(self):
        self.contexts += 1
        return NamedContext(self) if self.named else BindingContext(self)

    def get_tensor_name(self, i):
        return self.names[i]

    def get_tensor_shape(self, name):
        return (-1, self.features) if name == "features" else None

    def get_binding_index(self, name):
        return self.names.index(name) if name in self.names else -1

    def get_binding_shape(self, i):
        return (-1, self.features)


class Runner:
    """EngineRunner without a GPU or buffers (trt_fakes.install puts it in place): the engine made or given, counted
    runs (zeros out); its inspector is the real one's."""

    def __init__(
        self, engine_or_maker, trt, cuda, stream, input_name, output_name, input_shape, head, max_batch, static=False
    ):
        self.trt, self.static, self.head, self.runs, self.active = trt, static, head, 0, False
        self.maker, self.engine = (engine_or_maker, None) if callable(engine_or_maker) else (None, engine_or_maker)

    def activate(self):
        self.engine, self.active = self.engine or self.maker(), True
        return self

    def deactivate(self):
        self.active, self.engine = False, self.engine if self.maker is None else None

    __enter__ = activate

    def __exit__(self, *exc):
        self.deactivate()

    def run(self, batch, features=False):
        assert self.active, "run before activate"
        self.runs += 1
        return np.zeros((len(batch), self.head), dtype=np.float32)

    def layer_names(self):
        from edgetool.runtime.trt.runner import EngineRunner

        return EngineRunner.layer_names(self)
