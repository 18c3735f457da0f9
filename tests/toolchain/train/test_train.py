"""Training modes from the CLI, resumable checkpoints, torchrun/DDP."""

import os
import subprocess
import sys

import pytest

torch = pytest.importorskip("torch")

from edgetool.toolchain.train import models as M  # noqa: E402
from edgetool.toolchain.train import fit as T  # noqa: E402

TINY = [
    "--limit-train",
    "300",
    "--limit-test",
    "100",
    "--epochs",
    "1",
    "--base-epochs",
    "1",
    "--ft-epochs",
    "1",
    "--qat-epochs",
    "1",
    "--batch",
    "64",
]


def test_every_mode_trains_from_the_cli(run_cli, tmp_path):
    run = tmp_path / "run"
    proc = run_cli("train", run, *TINY, "--modes", "flat,superclass,vanilla,qat")
    assert proc.returncode == 0, proc.stderr
    for f in ["flat.pt", "super.pt", "super_qat.pt"] + [
        "{}/{}.pt".format(d, k) for d in ("vanilla", "qat") for k in range(3)
    ]:
        assert (run / f).is_file(), f
        ck = torch.load(run / f, weights_only=True)  # plain tensors and lists only
        assert isinstance(ck, dict)
    # a second call resumes: nothing left to train, same files
    before = (run / "qat" / "0.pt").stat().st_mtime_ns
    proc = run_cli("train", run)
    assert proc.returncode == 0, proc.stderr
    assert (run / "qat" / "0.pt").stat().st_mtime_ns == before
    # the report runs on it
    proc = run_cli("evaluate", run, "--out", tmp_path / "rep")
    assert proc.returncode == 0, proc.stderr


def test_train_rejects_bad_input(run_cli, tmp_path):
    proc = run_cli("train", tmp_path / "r", "--modes", "flat,bogus")
    assert proc.returncode != 0 and "unknown mode" in proc.stderr and "Traceback" not in proc.stderr
    proc = run_cli("train", tmp_path / "r", "--data", tmp_path / "nodata")
    assert proc.returncode != 0 and "no such data folder" in proc.stderr
    proc = run_cli("train", tmp_path / "r", "--arch", "resnet9000")
    assert proc.returncode != 0 and "unknown model" in proc.stderr
    proc = run_cli("train", tmp_path / "r", "--delta-budget", "lots")
    assert proc.returncode != 0 and "delta budget 'lots'" in proc.stderr and "Traceback" not in proc.stderr


def _data(n=256):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, 1, 12, 12, generator=g)
    y = (x.mean((1, 2, 3)) > 0).long()
    return x, y


def test_interrupted_fit_resumes_bit_for_bit(tmp_path):
    x, y = _data()
    torch.manual_seed(0)
    ref = M.ResNet(1, 2, (1,), (8,))
    torch.manual_seed(0)
    m = M.ResNet(1, 2, (1,), (8,))
    T.fit(ref, x, y, T.Recipe(3, 1e-2, 64), hooks=T.FitHooks(progress=False))

    ck = str(tmp_path / "stage.partial")

    def stop(epoch):
        if epoch == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        T.fit(m, x, y, T.Recipe(3, 1e-2, 64), hooks=T.FitHooks(progress=False, checkpoint=ck, on_epoch=stop))
    assert torch.load(ck, weights_only=True)["epoch"] == 2
    torch.manual_seed(123)
    resumed = M.ResNet(1, 2, (1,), (8,))  # fresh weights: everything must come from the checkpoint
    hist = T.fit(resumed, x, y, T.Recipe(3, 1e-2, 64), hooks=T.FitHooks(progress=False, checkpoint=ck))
    assert len(hist["loss"]) == 1
    for (n, a), b in zip(ref.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), n


@pytest.mark.slow
def test_torchrun_two_processes(tmp_path):
    import torch.distributed as dist

    if not dist.is_available():
        pytest.skip("torch.distributed is not available")
    run = tmp_path / "ddp"
    env = dict(os.environ, EDGETOOL_THREADS="1", OMP_NUM_THREADS="1")
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node",
            "2",
            "-m",
            "edgetool",
            "train",
            str(run),
            *TINY,
            "--modes",
            "superclass,qat",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (run / "super.pt").is_file() and (run / "qat" / "2.pt").is_file()
    assert not any(f.endswith(".partial") for f in os.listdir(run))
