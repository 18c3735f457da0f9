"""Stand-ins for TensorRT and pycuda, and small real bundles whose deltas touch known tensors.

:func:`fake_tensorrt` is a ``tensorrt`` module with the names one version has (a build step that
touches a name its version lacks fails with AttributeError), a builder that records what it was
asked for and serializes it as the "plan", and an engine, refitter and runtime that read that
plan back.  The refitter records what each refit was given.  :func:`install` puts it, a pycuda
stand-in and host-memory replacements for the two GPU objects (``EngineRunner`` and
``DeviceDeltaApplier``) in place, so the real ``TrtBackend``, ``build_engine`` and ``engine
build`` run on the CPU.  Nothing here runs a network: these fakes prove which calls the product
makes and with what, not what TensorRT does with them.
"""

import copy
import json
import sys
import types
from types import SimpleNamespace

import numpy as np
import pytest

from cuda_fakes import Runner

BASE_FLAGS = ("INT8", "FP16", "REFIT", "GPU_FALLBACK")
TEN = BASE_FLAGS + ("REFIT_INDIVIDUAL", "STRIP_PLAN")
VERSIONS = {
    # version: (BuilderFlag members, NetworkDefinitionCreationFlag members with their values, fast-int8 probe)
    "8.6.1": (BASE_FLAGS, {"EXPLICIT_BATCH": 0}, True),
    "10.3.0": (TEN, {"EXPLICIT_BATCH": 0, "STRONGLY_TYPED": 1}, True),
    "11.4.0": (("REFIT", "REFIT_INDIVIDUAL", "STRIP_PLAN", "GPU_FALLBACK"), {"STRONGLY_TYPED": 1}, False),
}
DEVICE = {}  # "weights": the host array standing in for the device buffer the refitter is pointed at


class Network:
    def __init__(self, flags):
        self.flags, self.marked, self.weights, self.model = flags, [], [], None

    def mark_weights_refittable(self, name):
        if name not in self.weights:
            return False
        self.marked.append(name)
        return True


class Config:
    def __init__(self, trt):
        self.flags, self.pools, self.profiles = [], {}, []
        self.default_device_type, self.DLA_core = trt.DeviceType.GPU, -1

    def set_flag(self, flag):
        self.flags.append(flag)

    def set_memory_pool_limit(self, pool, size):
        self.pools[pool] = size

    def add_optimization_profile(self, profile):
        self.profiles.append(profile)


class Builder:
    def __init__(self, trt, logger):
        self.trt, self.logger = trt, logger
        self.num_DLA_cores = trt.dla_cores
        if VERSIONS[trt.__version__][2]:
            self.platform_has_fast_int8 = True

    def create_network(self, flags):
        return Network(flags)

    def create_builder_config(self):
        return Config(self.trt)

    def create_optimization_profile(self):
        shapes = []
        return SimpleNamespace(shapes=shapes, set_shape=lambda *a: shapes.append(a))

    def build_serialized_network(self, network, config):
        self.trt.builds.append((network, config))
        plan = {
            "flags": config.flags,
            "marked": network.marked,
            "weights": network.weights,
            "device": str(config.default_device_type),
            "dla_core": config.DLA_core,
        }
        return json.dumps(plan).encode()


class Parser:
    num_errors = 0

    def __init__(self, network, logger):
        self.network = network

    def parse(self, model):
        """Reads the model's initializers: the weights the network could mark refittable."""
        onnx = pytest.importorskip("onnx")
        self.network.model = model
        self.network.weights = [t.name for t in onnx.load_from_string(model).graph.initializer]
        return True


class Engine:
    def __init__(self, plan: dict):
        self.plan = plan
        individual = "REFIT_INDIVIDUAL" in plan["flags"]
        self.refittable = plan["marked"] if individual else plan["weights"] if "REFIT" in plan["flags"] else []
        self.refits = []  # per refit: {engine name: the values it was given}

    def create_execution_context(self):
        return SimpleNamespace()

    def serialize(self):
        """The plan again, with the sha256 of every value each refit gave it (a refitted copy differs)."""
        import hashlib

        done = [
            {n: hashlib.sha256(np.ascontiguousarray(v).tobytes()).hexdigest() for n, v in r.items()}
            for r in self.refits
        ]
        return json.dumps(dict(self.plan, refits=self.plan.get("refits", []) + done)).encode()

    def create_engine_inspector(self):
        """Lists one made-up layer per weight (no device: the default profiling verbosity has none)."""
        layers = ["layer of {}".format(w) for w in self.plan["weights"]]
        return SimpleNamespace(get_engine_information=lambda fmt: json.dumps({"Layers": layers, "Bindings": []}))


class Refitter:
    """Records each set_named_weights; a refit snapshots what it was given since the previous one.

    ``trt.fused`` ({name: [names]}) says which weights TensorRT also asks for once a name is set."""

    def __init__(self, trt, engine, logger):
        self.trt, self.engine, self.given = trt, engine, {}
        if int(trt.__version__.split(".")[0]) >= 10:
            self.weights_validation = True

    def get_all_weights(self):
        return list(self.engine.refittable)

    def set_named_weights(self, name, weights, location=None):
        partners = {p for ps in self.trt.fused.values() for p in ps}
        if name not in self.engine.refittable and name not in partners:
            return False
        self.given[name] = (weights, location)
        return True

    def get_missing_weights(self):
        want = {p for n in self.given for p in self.trt.fused.get(n, [])}
        return sorted(want - set(self.given))

    def refit_cuda_engine(self):
        self.engine.refits.append({name: _values(w, loc) for name, (w, loc) in self.given.items()})
        self.given = {}
        return True

    def refit_cuda_engine_async(self, stream_handle):
        return self.refit_cuda_engine()


def _values(w, location):
    if location == "DEVICE":
        nbytes = w.count * np.dtype(w.dtype).itemsize
        return DEVICE["weights"][w.ptr : w.ptr + nbytes].view(w.dtype).copy()
    return np.array(w.array, copy=True)


def _weights(*args):
    if len(args) == 1:
        return SimpleNamespace(array=args[0])
    dtype, ptr, count = args
    return SimpleNamespace(dtype=dtype, ptr=ptr, count=count)


def fake_tensorrt(version, dla_cores=0, fused=None):
    """A ``tensorrt`` module of *version* (one of :data:`VERSIONS`)."""
    flags, creation, _ = VERSIONS[version]
    trt = types.ModuleType("tensorrt")
    levels = dict(VERBOSE=0, INFO=1, WARNING=2, ERROR=3)
    trt.__version__ = version
    trt.builds, trt.dla_cores, trt.fused = [], dla_cores, dict(fused or {})
    trt.Logger = type("Logger", (), dict(levels, __init__=lambda self, severity=None: None))
    trt.Builder = lambda logger: Builder(trt, logger)
    trt.OnnxParser = Parser
    trt.BuilderFlag = SimpleNamespace(**{f: f for f in flags})
    trt.NetworkDefinitionCreationFlag = SimpleNamespace(**creation)
    trt.MemoryPoolType = SimpleNamespace(WORKSPACE="WORKSPACE")
    trt.DeviceType = SimpleNamespace(GPU="GPU", DLA="DLA")
    trt.TensorLocation = SimpleNamespace(DEVICE="DEVICE", HOST="HOST")
    trt.LayerInformationFormat = SimpleNamespace(JSON="JSON", ONELINE="ONELINE")
    trt.int8, trt.float32, trt.float16 = np.int8, np.float32, np.float16
    trt.Weights = _weights
    trt.Runtime = lambda logger: SimpleNamespace(deserialize_cuda_engine=lambda plan: Engine(json.loads(plan)))
    trt.Refitter = lambda engine, logger: Refitter(trt, engine, logger)
    return trt


class HostApplier:
    """DeviceDeltaApplier on a host array: a tensor's "pointer" is its offset in the packed buffer."""

    def __init__(self, layout, base_packed, stream=None, module=None):
        self.layout, self.base = layout, base_packed.copy()
        self.weights = DEVICE["weights"] = self.base.copy()

    def pointer(self, name):
        return self.layout.by_name[name].offset

    def apply(self, delta):
        if delta is None:
            self.weights[...] = self.base
            return
        dense = delta.dense() if hasattr(delta, "dense") else delta
        self.weights[...] = self.layout.apply_delta(self.base, dense)

    def free(self):
        pass


def install(monkeypatch, version, dla_cores=0, fused=None):
    """Put the fake tensorrt (returned), a pycuda stand-in and the host-memory GPU objects in place."""
    from edgetool.runtime import machine
    from edgetool.runtime.trt import backend, delta_apply, penalty

    trt = fake_tensorrt(version, dla_cores, fused)
    driver = types.ModuleType("pycuda.driver")
    driver.Stream = lambda: SimpleNamespace(handle=0, synchronize=lambda: None)
    pycuda = types.ModuleType("pycuda")
    pycuda.driver = driver
    for name, module in (("tensorrt", trt), ("pycuda", pycuda), ("pycuda.driver", driver)):
        monkeypatch.setitem(sys.modules, name, module)
    monkeypatch.setitem(sys.modules, "pycuda.autoinit", types.ModuleType("pycuda.autoinit"))
    monkeypatch.setattr(backend, "EngineRunner", Runner)
    monkeypatch.setattr(penalty, "EngineRunner", Runner)
    monkeypatch.setattr(backend, "gpu_name", lambda: "Fake GPU")
    monkeypatch.setattr(machine, "gpu_name", lambda: "Fake GPU")
    monkeypatch.setattr(delta_apply, "DeviceDeltaApplier", HostApplier)
    return trt


SUPERS = ["a", "b"]
SUBS = [["a1", "a2"], ["b1", "b2", "b3"]]


def touch(net, name):
    """Change packed tensor *name* of a QAT resnet-tiny in place (its weight scales stay frozen)."""
    torch = pytest.importorskip("torch")
    layer, kind = name.rsplit(".", 1)
    key = layer.replace(".", "__")
    params = dict(net.named_parameters())
    with torch.no_grad():
        if kind == "weight":
            params["params.{}__weight".format(key)].mul_(1.05)
        elif layer == "fc":
            params["params.fc__bias"].add_(0.1)
        else:  # a conv's deployed BatchNorm: its scale and bias
            params["bns.{}.{}".format(key, "weight" if kind == "scale" else "bias")].add_(0.1)


def touched_bundle(out, touches, codec="zstd", seed=0):
    """A real bundle (untrained resnet-tiny, two superclasses) whose delta k changes exactly *touches[k]*."""
    torch = pytest.importorskip("torch")
    from edgetool.export.bundle import write_bundle
    from edgetool.toolchain.hierarchy.spec import Hierarchy
    from edgetool.toolchain.train import models
    from edgetool.toolchain.train.qat import from_float

    torch.manual_seed(seed)
    hier = Hierarchy(SUPERS, SUBS)
    base = from_float(models.build("resnet-tiny", 1, hier.head_width), [torch.randn(2, 1, 16, 16)])
    subs = []
    for names in touches:
        sub = copy.deepcopy(base)
        for name in names:
            touch(sub, name)
        subs.append(sub)
    spec = {
        "name": "input",
        "shape": [1, 28, 28],
        "layout": "NCHW",
        "dtype": "float32",
        "scale": 1.0 / 255.0,
        "mean": [0.5],
        "std": [0.25],
        "color": "gray",
        "classes": [c for s in SUBS for c in s],
    }
    x = np.random.RandomState(seed).rand(4, 1, 28, 28).astype(np.float32)
    write_bundle(str(out), base, subs, hier, spec, codec=codec, samples=x, release=0)
    return str(out)
