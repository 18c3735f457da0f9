"""Shared fixtures: run_cli (the edgetool command in a subprocess), repo_root, cuda_device, and a tiny
trained run and its bundle. The plain run_cli and ROOT stay importable for scripts that call them."""

import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED = os.path.join(os.path.dirname(ROOT), "shared")


def run_cli(*args, env=None, input=None, timeout=600):
    """Run the edgetool console entry point in a subprocess; return CompletedProcess."""
    cmd = [sys.executable, "-m", "edgetool"] + [str(a) for a in args]
    e = dict(os.environ)
    e.setdefault("EDGETOOL_THREADS", "2")
    if env:
        e.update(env)
    return subprocess.run(cmd, capture_output=True, text=True, env=e, input=input, timeout=timeout)


def one_error_line(proc):
    """The one ``error:`` line of a failed command (no traceback, exactly one such line)."""
    assert proc.returncode != 0, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("error: ")]
    assert len(errors) == 1, proc.stderr
    return errors[0]


@pytest.fixture(scope="session", name="run_cli")
def run_cli_fixture():
    """``run_cli(*args)``: the edgetool command in a subprocess (a CompletedProcess)."""
    return run_cli


@pytest.fixture(scope="session")
def repo_root():
    return ROOT


@pytest.fixture(scope="session")
def cuda_device():
    """Skips (with the reason) unless pycuda sees a CUDA device."""
    try:
        import pycuda.driver as cuda

        cuda.init()
        if cuda.Device.count() == 0:
            pytest.skip("no CUDA device")
    except ImportError:
        pytest.skip("pycuda is not installed (pip install 'edgetool[gpu]')")
    except Exception as exc:
        pytest.skip("CUDA unavailable: {}".format(exc))


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    """A tiny but complete training run on the shipped sample (every network, a few seconds)."""
    pytest.importorskip("torch")
    from edgetool.toolchain.train.run import Run, TrainConfig

    cfg = TrainConfig(
        epochs=2, base_epochs=1, ft_epochs=2, qat_epochs=1, limit_train=1200, limit_test=300, batch=64, seed=1
    )
    path = tmp_path_factory.mktemp("run")
    run = Run.open(str(path), cfg, progress=False)
    run.train_all()
    return run


@pytest.fixture(scope="session")
def tiny_bundle(tiny_run, tmp_path_factory):
    out = str(tmp_path_factory.mktemp("bundle") / "bundle")
    tiny_run.export(out, codec="7z")
    return out


@pytest.fixture()
def bundle_copy(tiny_bundle, tmp_path):
    import shutil

    dst = str(tmp_path / "bundle")
    shutil.copytree(tiny_bundle, dst)
    return dst


@pytest.fixture(scope="session")
def sample_pngs(tmp_path_factory):
    from PIL import Image

    from edgetool.toolchain.data.folders import load_sample

    test = load_sample("test")
    d = tmp_path_factory.mktemp("images")
    paths = []
    for i in range(6):
        p = d / "img{}_{}.png".format(i, test.classes[test.labels[i]].replace("/", "-").replace(" ", "_"))
        Image.fromarray(test.images[i, :, :, 0], "L").save(p)
        paths.append(str(p))
    return paths


@pytest.fixture()
def small_disk(tmp_path):
    """``small_disk(kib)``: a new folder on a tmpfs of that size (a disk that fills up for real);
    skips where tmpfs cannot be mounted (not root, or no mount permission).  Unmounted after the test."""
    import shutil

    mounted = []

    def make(kib):
        if os.geteuid() != 0 or not shutil.which("mount"):
            pytest.skip("mounting a small tmpfs needs root")
        d = tmp_path / "disk{}".format(len(mounted))
        d.mkdir()
        proc = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size={}k,mode=0777".format(int(kib)), "tmpfs", str(d)],
            capture_output=True,
            text=True,
        )
        if proc.returncode != 0:
            pytest.skip("cannot mount a tmpfs here: {}".format(proc.stderr.strip()))
        mounted.append(d)
        return d

    yield make
    for d in reversed(mounted):
        if subprocess.run(["umount", str(d)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(d)], capture_output=True)
