"""--device / $EDGETOOL_DEVICE: which device a name stands for, one error line for a device torch
does not see, and networks that train on the device and come back to the CPU (GPU test)."""

import copy

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from edgetool.runtime.errors import UsageError  # noqa: E402
from edgetool.toolchain.train import delta_budget as DB  # noqa: E402
from edgetool.toolchain.train import device as D  # noqa: E402
from edgetool.toolchain.train import qat as Q  # noqa: E402
from edgetool.toolchain.train import fit as T  # noqa: E402
from qat_pairs import _data, _qat_pair  # noqa: E402


@pytest.fixture
def gpus(monkeypatch):
    """Pretend torch sees *n* CUDA GPUs (resolve only asks is_available and device_count)."""

    def see(n):
        monkeypatch.setattr(torch.cuda, "is_available", lambda: n > 0)
        monkeypatch.setattr(torch.cuda, "device_count", lambda: n)

    monkeypatch.delenv(D.ENV, raising=False)
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    return see


def test_names_resolve_to_devices(gpus, monkeypatch):
    gpus(0)
    assert D.resolve("cpu") == torch.device("cpu")
    assert D.resolve("auto") == torch.device("cpu")
    assert D.resolve(None) == torch.device("cpu")  # no $EDGETOOL_DEVICE: auto
    assert D.resolve(" CPU ") == torch.device("cpu")
    gpus(2)
    assert D.resolve("auto") == torch.device("cuda", 0)
    assert D.resolve("cuda") == torch.device("cuda", 0)
    assert D.resolve("cuda:1") == torch.device("cuda", 1)
    monkeypatch.setenv("LOCAL_RANK", "1")  # a torchrun process takes its own GPU
    assert D.resolve("cuda") == torch.device("cuda", 1)
    assert D.resolve("cuda:0") == torch.device("cuda", 0)
    monkeypatch.setenv(D.ENV, "cpu")
    assert D.resolve() == torch.device("cpu")


@pytest.mark.parametrize(
    "name, seen, message",
    [
        ("cuda", 0, "device cuda: torch sees no CUDA GPU"),
        ("cuda:0", 0, "device cuda:0: torch sees no CUDA GPU"),
        ("cuda:2", 2, "device cuda:2: torch sees 2 CUDA GPU"),
        ("tpu", 1, "device 'tpu': choose auto, cpu, cuda or cuda:N"),
        ("meta", 1, "device 'meta': choose"),
        ("cpu:1", 1, "device 'cpu:1': choose"),
        ("cuda:-1", 1, "choose auto, cpu, cuda or cuda:N"),
        ("\u00e9\x00" * 40, 1, "choose auto, cpu, cuda or cuda:N"),
    ],
)
def test_bad_device_names_are_one_error(gpus, name, seen, message):
    gpus(seen)
    with pytest.raises(UsageError, match=message.replace("(", r"\(")) as e:
        D.resolve(name)
    assert "\n" not in str(e.value) and len(str(e.value)) < 200


def test_bad_environment_device_is_an_error(gpus, monkeypatch):
    gpus(0)
    monkeypatch.setenv(D.ENV, "cuda")
    with pytest.raises(UsageError, match="torch sees no CUDA GPU"):
        D.resolve()


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a CUDA GPU")
@pytest.mark.parametrize("command", [["train", "RUN"], ["demo", "--out", "RUN"], ["evaluate", "RUN"]])
def test_cli_refuses_a_gpu_it_does_not_have(run_cli, tmp_path, command):
    run = tmp_path / "run"
    args = [str(run) if a == "RUN" else a for a in command]
    proc = run_cli(*args, "--device", "cuda")
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().splitlines() == [
        "error: device cuda: torch sees no CUDA GPU (a CPU-only torch build, or no NVIDIA driver); use --device cpu"
    ]
    assert not run.exists()  # nothing was started
    proc = run_cli("train", str(run), "--device", "gpu", env={D.ENV: "cpu"})
    assert proc.returncode == 2 and "choose auto, cpu, cuda or cuda:N" in proc.stderr


def test_budget_step_follows_its_network_to_another_device():
    """The budget step is made while the network is on the CPU; fit then moves the network.  The
    base copies follow the weight's device (checked here with a copy placed like a moved one)."""
    base, net = _qat_pair()
    step = DB.ProximalStep(net, base, tau=0.5)
    p, a = step.pairs[0]
    assert DB._follow(step.pairs) is step.pairs  # same device: nothing copied
    w = torch.nn.Parameter(p.detach().to("meta"))  # the weight, moved by fit; its base copy still on the CPU
    back = DB._follow([(w, a)])
    assert back[0][0] is w and back[0][1].device.type == "meta" and back[0][1].shape == a.shape


def test_fit_and_predict_leave_networks_on_the_cpu():
    x, y = _data(3)
    base, net = _qat_pair()
    T.fit(net, x, y, T.Recipe(1, 3e-3, 32), n_valid=3, hooks=T.FitHooks(progress=False))
    assert {p.device.type for p in net.parameters()} == {"cpu"}
    out = T.predict_logits(net, x, 3)
    assert out.device.type == "cpu" and out.shape == (len(x), 3)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="torch sees no CUDA GPU")
def test_qat_fine_tune_on_the_gpu_matches_its_export(monkeypatch):
    """A QAT fine-tune under the proximal budget on the GPU: the network comes back to the CPU,
    its budget step ran on the GPU (exact zeros), and the CPU's logits agree with the GPU's."""
    monkeypatch.setattr(D, "_chosen", None)
    monkeypatch.setenv(D.ENV, "cuda")
    base, net = _qat_pair(1)
    x, y = _data(11)
    T.fit(
        net,
        x,
        y,
        T.Recipe(2, 3e-3, 32),
        n_valid=3,
        hooks=T.FitHooks(progress=False, after_step=DB.ProximalStep(net, base, 0.9)),
    )
    assert {p.device.type for p in net.parameters()} | {b.device.type for b in net.buffers()} == {"cpu"}
    d = Q.code_delta(base, net)
    assert 0 < np.count_nonzero(d) < d.size
    on_gpu = T.predict_logits(copy.deepcopy(net), x, 3)
    monkeypatch.setattr(D, "_chosen", torch.device("cpu"))
    on_cpu = T.predict_logits(net, x, 3)
    # TF32 convolutions and activation rounding differ slightly between the devices
    assert float((on_gpu.argmax(1) == on_cpu.argmax(1)).float().mean()) >= 0.9
    assert float((on_gpu - on_cpu).abs().max()) < 0.1 * float(on_cpu.abs().max())
