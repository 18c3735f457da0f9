"""--threads / $EDGETOOL_THREADS: the threads torch trains with (train, demo), one error line for a bad value."""

import os

import pytest

torch = pytest.importorskip("torch")

from conftest import one_error_line, run_cli  # noqa: E402
from edgetool.runtime.errors import UsageError  # noqa: E402
from edgetool.toolchain.train import device as D  # noqa: E402

TINY = ["--modes", "flat", "--epochs", "1", "--limit-train", "200", "--limit-test", "50", "--batch", "50", "-v"]


@pytest.fixture
def clean(monkeypatch):
    monkeypatch.setattr(D, "_threads", None)
    monkeypatch.delenv(D.THREADS_ENV, raising=False)
    return monkeypatch


def test_the_flag_then_the_variable_then_every_core(clean):
    every = len(os.sched_getaffinity(0))
    assert D.threads() == every
    clean.setenv(D.THREADS_ENV, "0")
    assert D.threads() == every
    clean.setenv(D.THREADS_ENV, "3")
    assert D.threads() == 3
    D.choose_threads(1)
    assert D.threads() == 1  # the flag wins
    D.choose_threads(0)
    assert D.threads() == 3  # 0: not given
    D.set_threads()
    try:
        assert torch.get_num_threads() == 3 and D.describe(torch.device("cpu")) == "cpu, 3 threads"
    finally:
        torch.set_num_threads(every)
    for bad in ("-1", "two", "1.5"):
        clean.setenv(D.THREADS_ENV, bad)
        with pytest.raises(UsageError, match="EDGETOOL_THREADS"):
            D.threads()
    with pytest.raises(UsageError, match="--threads must be >= 0"):
        D.choose_threads(-2)


def test_train_trains_with_the_threads_asked_for(tmp_path):
    proc = run_cli("train", tmp_path / "run", *TINY, "--threads", "1", env={"EDGETOOL_THREADS": "2"})
    assert proc.returncode == 0, proc.stderr
    assert "INFO: training on cpu, 1 thread\n" in proc.stderr
    assert "--threads" in run_cli("demo", "--help").stdout


def test_bad_threads_are_one_error_line_before_any_work(tmp_path):
    for args, env, message in (
        (["--threads", "-1"], None, "--threads must be >= 0"),
        ([], {"EDGETOOL_THREADS": "many"}, "EDGETOOL_THREADS='many': not a whole number"),
    ):
        assert message in one_error_line(run_cli("train", tmp_path / "run", *TINY, *args, env=env))
        assert not (tmp_path / "run").exists()
    assert "--threads must be >= 0" in one_error_line(run_cli("demo", "--out", tmp_path / "d", "--threads", "-3"))
    assert not (tmp_path / "d").exists()
