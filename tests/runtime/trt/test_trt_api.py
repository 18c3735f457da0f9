"""Every TensorRT name the code uses exists in each TensorRT version whose code path uses it.

The names come from the code (runtime/trt/*.py and runtime/doctor*.py, read by trt_api_check), the
versions' names from their Python bindings wheels (trt_names: 8.6.1, 10.3.0, 10.13.0.35, 11.4.0.106;
downloaded once, then cached).  This checks names, not behaviour: nothing here runs TensorRT.
"""

import glob
import os
from collections import defaultdict

import pytest

import trt_api_check as C
import trt_names as N

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
SOURCES = sorted(glob.glob(os.path.join(ROOT, "runtime", "trt", "*.py"))) + sorted(
    glob.glob(os.path.join(ROOT, "runtime", "doctor*.py"))
)
V8, V10, V1013, V11 = (v for _, v in N.WHEELS)
TEN_ON = {V10, V1013, V11}


@pytest.fixture(scope="module")
def tables():
    try:
        return N.load_all()
    except N.Unavailable as exc:
        pytest.skip("TensorRT bindings wheels unavailable (cannot reach the package registry?): {}".format(exc))


def product_usages():
    out = []
    for path in SOURCES:
        with open(path) as f:
            out += C.collect(f.read(), os.path.relpath(path, ROOT))
    return out


def test_every_tensorrt_name_the_code_uses_exists_where_it_runs(tables):
    usages = product_usages()
    assert {"create_network", "execute_async_v3", "refit_cuda_engine", "BuilderFlag"} <= {u.name for u in usages}
    problems, tails = C.check(usages, tables)
    by_name = defaultdict(set)
    for line in tails:  # "path:line: NAME found as a tail in TensorRT V"
        by_name[line.split(": ", 1)[1].split(" ")[0]].add(line.rsplit(" ", 1)[1])
    print("found only as the tail of a longer string:")
    for name, versions in sorted(by_name.items()):
        print("  {}: TensorRT {}".format(name, ", ".join(sorted(versions, key=N.version_tuple))))
    assert problems == [], "\n".join(problems)


def test_the_name_tables_hold_the_known_facts(tables):
    def where(name):
        return {v for v, t in tables.items() if t.find(name)}

    assert where("FP16") == {V8, V10, V1013}  # gone in 11 ("superseded by strong typing")
    assert where("EXPLICIT_BATCH") == {V8, V10, V1013}
    assert where("STRONGLY_TYPED") == TEN_ON
    for name in ("refit_cuda_engine_async", "get_weights_prototype", "STRIP_PLAN", "REFIT_INDIVIDUAL"):
        assert where(name) == TEN_ON, name
    assert where("weights_validation") == TEN_ON
    for name in ("num_bindings", "get_binding_index", "get_binding_shape", "execute_async_v2"):
        assert where(name) == {V8}, name
    assert tables[V11].find("REFIT") == "tail"  # merged into INCLUDE_REFIT's string
    assert tables[V8].find("REFIT") == "exact"
    assert tables[V8].find("execute_async_v3") == "exact" and tables[V11].find("execute_async_v4") is None


def test_both_build_paths_are_checked_on_the_versions_they_run_on(tables):
    reach = defaultdict(set)
    for u in product_usages():
        if not u.probe:
            reach[(os.path.basename(u.path), u.name)] |= set(C.versions_reaching(u, tables))
    loader = {name: versions for (path, name), versions in reach.items() if path == "loader.py"}
    assert loader["STRONGLY_TYPED"] == TEN_ON  # strongly typed: int8 where the flag exists
    assert loader["EXPLICIT_BATCH"] == {V8}  # the 8.x path
    assert loader["INT8"] == loader["FP16"] == {V8, V10, V1013}  # precision flags: never on 11
    assert loader["REFIT_INDIVIDUAL"] == loader["mark_weights_refittable"] == loader["STRIP_PLAN"] == TEN_ON
    assert loader["REFIT"] == {V8} | TEN_ON
    assert loader["platform_has_fast_int8"] == {V8, V10, V1013}
    assert reach[("runner.py", "execute_async_v3")] == {V8} | TEN_ON
    assert reach[("runner.py", "execute_async_v2")] == set()  # the binding-index API: TensorRT 8.2 only
    assert reach[("runner.py", "device_memory_size")] == {V8}
    assert reach[("backend.py", "refit_cuda_engine_async")] == TEN_ON


BAD = """
def build(trt, builder, logger, plan):
    config = builder.create_builder_config()
    config.set_flag(trt.BuilderFlag.REFITT)  # @refitt
    if hasattr(config, "set_memory_pool_limitt"):  # @probe
        pass
    network = builder.create_network(1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH))  # @batch
    context = trt.Runtime(logger).deserialize_cuda_engine(plan).create_execution_context()
    context.execute_async_v4(0)  # @v4
    if trt_version(trt) >= (10, 0):
        context.execute_async_v2([], 0)  # @v2
    if not hasattr(context, "set_tensor_address"):
        context.execute_async_v2([], 0)  # never reached: every version checked has set_tensor_address
    if not hasattr(trt.BuilderFlag, "STRIP_PLAN"):
        raise RuntimeError("old")
    config.set_flag(trt.BuilderFlag.STRIP_PLAN)  # after the guard: 10 and 11 only
    return network


class Runner:
    def __init__(self, trt, plan):
        self.engine = trt.Runtime(None).deserialize_cuda_engine(plan)
        self.new = trt_version(trt) >= (10, 0)

    def shape(self):
        if self.new:
            return self.engine.get_binding_shape(0)  # @shape
        return self.engine.get_binding_shape(0)
"""


def synthetic_tables():
    """Name tables with the known facts only, so the checker's own test runs without the wheels."""
    common = ["BuilderFlag", "NetworkDefinitionCreationFlag", "REFIT", "set_flag", "create_builder_config"]
    common += ["create_network", "Runtime", "deserialize_cuda_engine", "create_execution_context"]
    common += ["execute_async_v3", "set_tensor_address", "set_memory_pool_limit"]
    old = ["EXPLICIT_BATCH", "execute_async_v2", "get_binding_shape"]
    new = ["STRIP_PLAN", "STRONGLY_TYPED"]
    names = {V8: common + old, V10: common + old + new, V1013: common + new + ["EXPLICIT_BATCH"], V11: common + new}
    names[V10] = [n for n in names[V10] if n not in ("execute_async_v2", "get_binding_shape")]
    return {v: N.NameTable(v, n, []) for v, n in names.items()}


@pytest.mark.parametrize("source", ["synthetic", "wheels"])
def test_the_checker_reports_misspelled_and_missing_names(request, source):
    tables = synthetic_tables() if source == "synthetic" else request.getfixturevalue("tables")
    lines = BAD.splitlines()

    def at(tag):
        return "bad.py:{}: ".format(next(i for i, line in enumerate(lines, 1) if line.endswith("# @" + tag)))

    everywhere = (V8, V10, V1013, V11)
    want = [at("refitt") + "REFITT missing from TensorRT " + v for v in everywhere]
    want += [at("probe") + "set_memory_pool_limitt (probed with hasattr/getattr) missing from every TensorRT checked"]
    want += [at("batch") + "EXPLICIT_BATCH missing from TensorRT " + V11]
    want += [at("v4") + "execute_async_v4 missing from TensorRT " + v for v in everywhere]
    want += [at("v2") + "execute_async_v2 missing from TensorRT " + v for v in (V10, V1013, V11)]
    want += [at("shape") + "get_binding_shape missing from TensorRT " + v for v in (V10, V1013, V11)]
    problems, _ = C.check(C.collect(BAD, "bad.py"), tables)
    assert problems == want
