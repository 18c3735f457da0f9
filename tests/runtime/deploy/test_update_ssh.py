"""A retrained model shipped as an update over a real OpenSSH server, end to end on the CPU: train,
export a full bundle, deploy it, retrain from it on more data, export the update, deploy it,
classify; the device's outputs equal those of the full bundle of the new weights, bit for bit."""

import json
import os

import pytest

from conftest import run_cli
from test_deploy_ssh import remote_status, ssh_cli, sshd  # noqa: F401  (fixture)

pytest.importorskip("torch")
pytest.importorskip("cryptography")

TINY = ["--modes", "qat", "--epochs", "1", "--base-epochs", "1", "--ft-epochs", "1", "--qat-epochs", "1"]
TINY += ["--batch", "64", "--limit-test", "30", "-q"]


def ok(proc):
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stdout + proc.stderr
    return proc


def outputs(bundle, images):
    proc = ok(run_cli("classify", bundle, *images, "--json"))
    return [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]


def test_retrain_export_an_update_deploy_it_and_classify_as_the_full_bundle(sshd, sample_pngs, tmp_path):  # noqa: F811
    key = tmp_path / "release"
    ok(run_cli("keygen", key))
    device = tmp_path / "device"
    ok(run_cli("target", "trust", device, str(key) + ".pub"))
    run1, run2 = tmp_path / "run1", tmp_path / "run2"
    ok(run_cli("train", run1, "--limit-train", "150", *TINY))
    ok(run_cli("export", run1, "--out", tmp_path / "v1", "--release", "10", "--sign", str(key) + ".key"))
    ok(ssh_cli(sshd, "deploy", tmp_path / "v1", "--root", device, "--device-profile", "cpu"))

    ok(run_cli("train", run2, "--update-of", run1, "--limit-train", "300", "-q"))  # more images
    proc = ok(run_cli("export", run2, "--update-of", tmp_path / "v1", "--out", tmp_path / "u2", "--release", "20",
                      "--sign", str(key) + ".key"))  # fmt: skip
    assert "re-encoded: base.onnx as an exact delta" in proc.stdout, proc.stdout
    ok(run_cli("export", run2, "--out", tmp_path / "full2", "--release", "20"))
    proc = ok(ssh_cli(sshd, "deploy", tmp_path / "u2", "--root", device, "--device-profile", "cpu"))
    assert "update of" in proc.stdout, proc.stdout

    current = os.path.join(str(device), "current")
    got, want = outputs(current, sample_pngs), outputs(str(tmp_path / "full2"), sample_pngs)
    assert got == want and len(got) == len(sample_pngs)
    same = open(os.path.join(current, "base.onnx"), "rb").read()
    assert same == open(tmp_path / "full2" / "base.onnx", "rb").read()
    st = remote_status(sshd, device)
    assert st["model"]["base"]["release"] == 10 and [u["release"] for u in st["model"]["updates"]] == [20]
    text = ok(ssh_cli(sshd, "status", "--root", device)).stdout
    assert "+ 1 update" in text, text
