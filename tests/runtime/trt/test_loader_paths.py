"""The two build paths of runtime/trt/loader.py, driven through a recording stand-in for the tensorrt module.

Each stand-in has only the names its version has (per the bindings' name tables that
test_trt_api.py reads): a build step touching a name its version lacks fails with AttributeError.
"""

from types import SimpleNamespace

import pytest

from edgetool.runtime.errors import DeviceError
from edgetool.runtime.trt import loader

ALL_FLAGS = ("INT8", "FP16", "REFIT", "REFIT_INDIVIDUAL", "STRIP_PLAN")
VERSIONS = {
    # version: (BuilderFlag members, NetworkDefinitionCreationFlag members with their values)
    "8.2.1": (("INT8", "FP16", "REFIT"), {"EXPLICIT_BATCH": 0}),
    "8.6.1": (("INT8", "FP16", "REFIT"), {"EXPLICIT_BATCH": 0}),
    "10.3.0": (ALL_FLAGS, {"EXPLICIT_BATCH": 0, "STRONGLY_TYPED": 1}),
    "11.4.0": (("REFIT", "REFIT_INDIVIDUAL", "STRIP_PLAN"), {"STRONGLY_TYPED": 1}),
}


class Network:
    def __init__(self, flags):
        self.flags, self.marked = flags, []

    def mark_weights_refittable(self, name):
        self.marked.append(name)
        return True


class Config:
    def __init__(self):
        self.flags, self.pools, self.profiles = [], {}, []

    def set_flag(self, flag):
        self.flags.append(flag)

    def set_memory_pool_limit(self, pool, size):
        self.pools[pool] = size

    def add_optimization_profile(self, profile):
        self.profiles.append(profile)


class Builder:
    def __init__(self, logger):
        self.logger, self.networks, self.configs = logger, [], []
        self.platform_has_fast_int8 = True

    def create_network(self, flags):
        self.networks.append(Network(flags))
        return self.networks[-1]

    def create_builder_config(self):
        self.configs.append(Config())
        return self.configs[-1]

    def create_optimization_profile(self):
        return SimpleNamespace(shapes=[], set_shape=lambda *a: None)

    def build_serialized_network(self, network, config):
        self.built = (network, config)
        return b"plan"


class Parser:
    num_errors = 0

    def __init__(self, network, logger):
        self.network = network

    def parse(self, model):
        self.network.model = model
        return True


def fake_trt(version):
    flags, creation = VERSIONS[version]
    builders = []

    def make_builder(logger):
        builders.append(Builder(logger))
        return builders[-1]

    levels = dict(VERBOSE=0, INFO=1, WARNING=2, ERROR=3)
    return SimpleNamespace(
        __version__=version,
        Logger=type("Logger", (), dict(levels, __init__=lambda self, severity: None)),
        Builder=make_builder,
        builders=builders,
        OnnxParser=Parser,
        BuilderFlag=SimpleNamespace(**{f: f for f in flags}),
        NetworkDefinitionCreationFlag=SimpleNamespace(**creation),
        MemoryPoolType=SimpleNamespace(WORKSPACE="WORKSPACE"),
    )


@pytest.fixture
def build(monkeypatch):
    """build(version, precision, **kw) -> (network, config, the weight form the parser got)."""

    def run(version, precision, **kw):
        trt = fake_trt(version)
        monkeypatch.setattr(loader, "import_trt", lambda: trt)
        monkeypatch.setattr(loader, "_LOGGERS", {})
        monkeypatch.setattr(loader, "engine_model", lambda model, form: form)
        assert loader.build_engine(b"onnx", "input", (1, 28, 28), precision, max_batch=4, **kw) == b"plan"
        (b,) = trt.builders
        network, config = b.built
        return network, config, network.model

    return run


@pytest.mark.parametrize("version", ["10.3.0", "11.4.0"])
def test_int8_is_strongly_typed_where_tensorrt_offers_it(build, version):
    network, config, form = build(version, "int8")
    assert network.flags == 1 << 1  # STRONGLY_TYPED, and nothing else
    assert config.flags == ["REFIT"]  # no INT8, no FP16: the Q/DQ model fixes every precision
    assert form == "int8" and config.pools == {"WORKSPACE": 1024 << 20}
    spec = SimpleNamespace(name="conv.w", dtype="int8")
    network, config, _ = build(version, "int8", refit_only=[spec], strip_weights=True)
    assert config.flags == ["REFIT_INDIVIDUAL", "STRIP_PLAN"] and network.marked == ["conv.w"]


def test_int8_on_tensorrt_8_sets_precision_flags_and_explicit_batch(build):
    network, config, form = build("8.6.1", "int8")
    assert network.flags == 1 << 0  # EXPLICIT_BATCH
    assert config.flags == ["INT8", "FP16", "REFIT"]
    assert form == "qdq-float"
    spec = SimpleNamespace(name="conv.w", dtype="int8")
    network, config, _ = build("8.6.1", "int8", refit_only=[spec])  # no REFIT_INDIVIDUAL before 10: all
    assert config.flags == ["INT8", "FP16", "REFIT"] and network.marked == []
    with pytest.raises(DeviceError, match="weight-stripped plans need TensorRT >= 10"):
        build("8.6.1", "int8", strip_weights=True)


@pytest.mark.parametrize("version, flags", [("8.2.1", 1 << 0), ("10.3.0", 0)])
def test_fp16_profiles_keep_the_dequantized_network_with_the_fp16_flag(build, version, flags):
    network, config, form = build(version, "fp16")
    assert network.flags == flags  # never strongly typed: fp16 comes from the builder flag
    assert config.flags == ["FP16", "REFIT"] and form == "fp16"


def test_fp16_on_a_tensorrt_without_the_flag_says_so(build):
    with pytest.raises(DeviceError, match="TensorRT 11.4.0 has no FP16 builder flag"):
        build("11.4.0", "fp16")


def test_no_fast_int8_is_refused_before_anything_is_built(monkeypatch):
    trt = fake_trt("8.6.1")
    builder = Builder(None)
    builder.platform_has_fast_int8 = False
    with pytest.raises(DeviceError, match="no fast int8"):
        loader.precision_config(trt, builder, "int8", 64)
    assert builder.configs == []
    assert loader.precision_config(trt, builder, "fp16", 64).flags == ["FP16"]
