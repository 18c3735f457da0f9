"""The CUDA delta kernel: packed layout, source, nvcc build, and bit-exactness on a GPU (skips without one)."""

import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from edgetool.runtime.bundle.reader import Bundle  # noqa: E402
from edgetool.runtime.bundle.onnx_weights import read_initializers  # noqa: E402
from edgetool.runtime.trt.delta_apply import KERNEL_PATH, VEC, launch_geometry, reference_apply  # noqa: E402


def test_packed_layout_fits_the_kernel(tiny_bundle):
    b = Bundle.open(tiny_bundle)
    lay = b.layout
    assert lay.int8_nbytes % VEC == 0 and lay.total_nbytes % VEC == 0
    n_vec, blocks = launch_geometry(lay.total_nbytes)
    assert n_vec * VEC == lay.total_nbytes and blocks >= 1
    base = lay.pack(read_initializers(b.base_onnx(), [t.name for t in lay.tensors]))
    for k in range(b.num_superclasses):
        d = b.read_delta(k)
        np.testing.assert_array_equal(reference_apply(base, d, lay.int8_nbytes), lay.apply_delta(base, d))
    with pytest.raises(ValueError):
        launch_geometry(lay.total_nbytes + 4)


def test_kernel_source_is_packaged():
    src = open(KERNEL_PATH).read()
    assert "edgetool_delta_apply" in src and "__vadd4" in src


@pytest.mark.parametrize("arch", ["sm_87", "sm_110"])
def test_kernel_compiles_with_nvcc(arch, tmp_path):
    nvcc = shutil.which("nvcc") or ("/usr/local/cuda/bin/nvcc" if os.path.exists("/usr/local/cuda/bin/nvcc") else None)
    if nvcc is None:
        if os.environ.get("EDGETOOL_REQUIRE_NVCC"):
            pytest.fail("nvcc not found but EDGETOOL_REQUIRE_NVCC is set")
        pytest.skip("nvcc not found")
    for kind in ("ptx", "cubin"):
        out = tmp_path / "delta_add.{}".format(kind)
        proc = subprocess.run(
            [nvcc, "-arch=" + arch, "-" + kind, "-O3", KERNEL_PATH, "-o", str(out)], capture_output=True, text=True
        )
        assert proc.returncode == 0, proc.stderr
        assert out.stat().st_size > 0
    ptx = (tmp_path / "delta_add.ptx").read_text()
    body = ptx.split(".entry edgetool_delta_apply(")[1].split(".entry ")[0]
    # one kernel for the whole packed buffer, 16-byte vectors only: base and delta through the
    # read-only path, one vector store; no narrower global access anywhere in the loop
    loads = [line for line in body.splitlines() if "ld.global" in line]
    stores = [line for line in body.splitlines() if "st.global" in line]
    assert len(loads) == 2 and all("ld.global.nc.v4.u32" in line for line in loads), loads
    assert len(stores) == 1 and "st.global.v4.u32" in stores[0], stores


def test_kernel_benchmark_without_gpu_says_so_and_writes_nothing(repo_root, tmp_path):
    from edgetool.runtime.machine import gpu_info

    if gpu_info()["available"]:
        pytest.skip("this machine has a GPU: the benchmark runs for real there")
    out = tmp_path / "k.json"
    proc = subprocess.run(
        [sys.executable, os.path.join(repo_root, "benchmarks", "kernel_bandwidth.py"), "--out", str(out)],
        capture_output=True,
        text=True,
    )
    assert proc.returncode != 0 and not out.exists()
    assert len(proc.stderr.strip().splitlines()) == 1
    assert proc.stderr.startswith("error: kernel_bandwidth needs pycuda and an NVIDIA GPU")


@pytest.mark.gpu
def test_kernel_bit_exact_on_gpu(cuda_device):
    import pycuda.autoinit  # noqa: F401

    from edgetool.runtime.trt.delta_apply import compile_module
    from edgetool.runtime.trt.kernel_check import check_kernel

    mod = compile_module()
    for nbytes, int8_nbytes in ((1 << 12, 1 << 11), (1 << 20, 3 << 18), ((1 << 22) + 256, 1 << 21)):
        res = check_kernel(mod, nbytes=nbytes, int8_nbytes=int8_nbytes, repeats=2)
        assert res["exact"], (nbytes, int8_nbytes)


@pytest.mark.gpu
def test_device_applier_matches_numpy_on_real_bundle(cuda_device, tiny_bundle):
    import pycuda.autoinit  # noqa: F401

    from edgetool.runtime.trt.delta_apply import DeviceDeltaApplier

    b = Bundle.open(tiny_bundle)
    base = b.layout.pack(read_initializers(b.base_onnx(), [t.name for t in b.layout.tensors]))
    app = DeviceDeltaApplier(b.layout, base)
    try:
        for k in range(b.num_superclasses):
            d = b.read_delta(k)
            app.apply(d)
            np.testing.assert_array_equal(app.download(), b.layout.apply_delta(base, d))
        app.apply(None)
        np.testing.assert_array_equal(app.download(), base)
    finally:
        app.free()
