"""Deploy without SSH: profiles, fit check, signatures, and the device side through ``deploy --to DIR``."""

import json
import os

import pytest

from conftest import run_cli
from deploy_fixtures import deploy_kit_fixture, snapshot, version_of  # noqa: F401  (fixture)


def no_traceback(proc):
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc


# -- profiles ------------------------------------------------------------------------------------------
def test_every_profile_validates_and_devices_lists_them():
    from edgetool.runtime import device_profiles
    from edgetool.runtime.device_profiles import load_dir

    profiles = load_dir(device_profiles.HERE)
    names = [p["name"] for p in profiles]
    assert {"cpu", "nano", "orin-agx", "orin-nano", "desktop-gpu"} <= set(names)
    assert [p for p in profiles if p["name"] == "cpu"][0]["gpu"] is False
    proc = no_traceback(run_cli("devices"))
    assert proc.returncode == 0, proc.stderr
    for n in names:
        assert "\n{} ".format(n) in proc.stdout
    assert json.loads(run_cli("devices", "--json").stdout)[0]["name"] == names[0]


@pytest.mark.parametrize(
    "change, message",
    [
        ({"memory_budget_mb": None}, "wrong type"),
        ({"precision": "int4"}, "precision"),
        ({"gpu": "yes"}, "wrong type"),
        ({"memory_budget_mb": 99999}, "exceeds the device"),
        ({"memory_budget_mb": 100}, "leaves nothing"),
    ],
)
def test_bad_profiles_are_refused_with_one_line(tmp_path, change, message):
    from edgetool.runtime import device_profiles

    p = device_profiles.load("nano")
    p.update(change)
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(p))
    proc = no_traceback(run_cli("deploy", "nobundle", "--to", tmp_path / "d", "--device-profile", path))
    assert proc.returncode != 0 and message in proc.stderr
    with pytest.raises(Exception, match=message):
        device_profiles.load(str(path))
    del p["runtime_overhead_mb"]
    path.write_text(json.dumps(p))
    with pytest.raises(Exception, match="misses runtime_overhead_mb"):
        device_profiles.load(str(path))


# -- fit check -----------------------------------------------------------------------------------------
def test_fit_refuses_oversized_bundle_for_nano_and_accepts_it_for_agx_orin(deploy_kit, tmp_path):
    from edgetool.runtime import device_profiles
    from edgetool.runtime.bundle.reader import Bundle
    from edgetool.runtime.deploy import fit

    with Bundle.open(deploy_kit["big"]) as b:
        nano = fit.estimate(b, device_profiles.load("nano"), batch=8)
        orin = fit.estimate(b, device_profiles.load("orin-agx"), batch=8)
        small = fit.estimate(b, device_profiles.load("nano"), batch=1)
    assert nano["total"] > nano["budget"] and orin["total"] < orin["budget"] and small["total"] < small["budget"]
    assert nano["parts"]["activations"] == 8 * small["parts"]["activations"]
    root = tmp_path / "dev"
    proc = no_traceback(run_cli("deploy", deploy_kit["big"], "--to", root, "--device-profile", "nano", "--batch", "8"))
    assert proc.returncode != 0
    line = proc.stderr.strip().splitlines()[-1]
    assert "does not fit nano" in line and "MiB budget" in line and "activations" in line, line
    assert not root.exists()  # refused before anything reached the target
    run_cli("target", "trust", root, deploy_kit["keys"]["good"]["public"])
    proc = run_cli("deploy", deploy_kit["big"], "--to", root, "--device-profile", "orin-agx", "--batch", "8")
    assert proc.returncode == 0, proc.stderr
    assert "fit: " in proc.stdout and "orin-agx" in proc.stdout
    proc = run_cli("deploy", deploy_kit["big"], "--to", root, "--device-profile", "nano", "--batch", "8", "--force")
    assert proc.returncode == 0 and "DOES NOT FIT (--force)" in proc.stdout, proc.stderr


# -- signatures ----------------------------------------------------------------------------------------
def test_keygen_and_signature_checks(deploy_kit, tmp_path):
    from edgetool.runtime.bundle.signature import verify_bundle
    from edgetool.runtime.errors import SignatureError

    proc = run_cli("keygen", tmp_path / "k")
    assert proc.returncode == 0 and oct(os.stat(tmp_path / "k.key").st_mode & 0o777) == "0o600"
    # the public key goes to the device, and `target trust` runs there with the device's own path
    assert (
        "copy {} to each device, then run there: edgetool target trust ROOT k.pub".format(tmp_path / "k.pub")
        in proc.stdout
    )
    proc = no_traceback(run_cli("keygen", tmp_path / "k"))
    assert proc.returncode != 0 and "refusing to overwrite" in proc.stderr
    trust = tmp_path / "trust"
    trust.mkdir()
    (trust / "good.pub").write_bytes(open(deploy_kit["keys"]["good"]["public"], "rb").read())
    assert verify_bundle(deploy_kit["v1"], str(trust)) == deploy_kit["keys"]["good"]["key_id"]
    with pytest.raises(SignatureError, match="does not match manifest.json"):
        verify_bundle(deploy_kit["tampered"], str(trust))
    with pytest.raises(SignatureError, match="does not trust"):
        verify_bundle(deploy_kit["untrusted"], str(trust))
    unsigned = tmp_path / "unsigned"
    import shutil

    shutil.copytree(deploy_kit["v1"], unsigned)
    os.unlink(unsigned / "manifest.sig")
    with pytest.raises(SignatureError, match="unsigned"):
        verify_bundle(str(unsigned), str(trust))
    assert verify_bundle(str(unsigned), str(trust), accept_unsigned=True) is None


def test_export_sign(tiny_run, deploy_kit, tmp_path):
    from edgetool.runtime.bundle.signature import verify_bundle

    out = tmp_path / "bundle"
    proc = run_cli("export", tiny_run.path, "--out", out, "--sign", deploy_kit["keys"]["good"]["private"])
    assert proc.returncode == 0, proc.stderr
    assert "signed: manifest.sig" in proc.stdout
    trust = os.path.dirname(deploy_kit["keys"]["good"]["public"])
    assert verify_bundle(str(out), trust) == deploy_kit["keys"]["good"]["key_id"]
    proc = no_traceback(run_cli("export", tiny_run.path, "--out", tmp_path / "b2", "--sign", tmp_path / "nokey"))
    assert proc.returncode != 0 and "cannot read signing key" in proc.stderr


# -- the device side, through deploy --to DIR ----------------------------------------------------------
def local_deploy(bundle, root, *extra):
    return no_traceback(run_cli("deploy", bundle, "--to", root, "--device-profile", "cpu", *extra))


def status(root):
    """The target's status in-process (the CLI's own output is checked once, below)."""
    from edgetool.runtime.target.install import Target

    return Target(str(root)).status()


@pytest.fixture()
def device(deploy_kit, tmp_path):
    """A deploy root that trusts the good key and serves v1."""
    root = tmp_path / "device root"
    proc = run_cli("target", "trust", root, deploy_kit["keys"]["good"]["public"])
    assert proc.returncode == 0, proc.stderr
    proc = local_deploy(deploy_kit["v1"], root)
    assert proc.returncode == 0, proc.stderr
    return root


def test_local_deploy_status_rollback_and_keep(deploy_kit, device):
    v1, v2, v3 = (version_of(deploy_kit[k]) for k in ("v1", "v2", "v3"))
    assert status(device)["current"] == v1
    proc = local_deploy(deploy_kit["v2"], device, "--doctor")
    assert proc.returncode == 0, proc.stderr
    assert "previous {} kept".format(v1) in proc.stdout and "1 ok, 0 failed" in proc.stdout
    st = status(device)
    assert st["current"] == v2 and st["previous"] == v1 and st["versions"] == sorted([v1, v2])
    assert st["checks"]["doctor"]["ok"] and st["checks"]["doctor"]["version"] == v2
    assert os.path.realpath(device / "current") == str(device / "versions" / v2)
    proc = no_traceback(run_cli("rollback", "--to", device))
    assert proc.returncode == 0, proc.stderr
    assert status(device)["current"] == v1
    human = run_cli("status", "--to", device)
    kid = deploy_kit["keys"]["good"]["key_id"]
    assert "current   {} (signed by key {})".format(v1, kid) in human.stdout and "doctor    PASS" in human.stdout
    assert status(device)["current_signed_by"] == kid
    as_json = json.loads(run_cli("status", "--to", device, "--json").stdout.strip().splitlines()[-1])
    assert as_json["current"] == v1 and as_json["host"] == "local" and as_json["ok"]
    # the device side speaks the workstation's word (--version), and still takes the older --to
    for flag, version in (("--version", v2), ("--to", v1)):
        proc = no_traceback(run_cli("target", "rollback", device, flag, version))
        assert proc.returncode == 0 and status(device)["current"] == version, proc.stderr
    # an identical re-run sends nothing new and switches back to v2
    proc = local_deploy(deploy_kit["v2"], device)
    assert proc.returncode == 0 and "(0 bytes sent)" in proc.stdout, proc.stdout
    proc = local_deploy(deploy_kit["v3"], device, "--keep", "2")
    assert proc.returncode == 0, proc.stderr
    st = status(device)
    assert st["versions"] == sorted([v2, v3]) and st["current"] == v3  # v1 pruned, previous v2 kept


@pytest.mark.parametrize(
    "which, message", [("tampered", "does not match manifest.json"), ("untrusted", "does not trust")]
)
def test_tampered_or_untrusted_bundle_is_refused_and_nothing_changes(deploy_kit, device, which, message):
    before = snapshot(str(device))
    proc = local_deploy(deploy_kit[which], device)
    assert proc.returncode != 0
    assert message in proc.stdout and "FAILED" in proc.stdout, proc.stdout
    assert proc.stderr.strip().splitlines()[-1].startswith("error: 1 of 1 host(s) failed")
    assert snapshot(str(device)) == before
    assert os.listdir(device / "staging") == []


def test_unsigned_bundle_needs_the_device_to_accept_it(deploy_kit, device, tmp_path):
    import shutil

    unsigned = tmp_path / "unsigned"
    shutil.copytree(deploy_kit["v2"], unsigned)
    os.unlink(unsigned / "manifest.sig")
    proc = local_deploy(unsigned, device)
    assert proc.returncode != 0 and "unsigned" in proc.stdout
    assert run_cli("target", "config", device, "--accept-unsigned").returncode == 0
    proc = local_deploy(unsigned, device)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert status(device)["accept_unsigned"] is True


def test_failing_doctor_rolls_back_automatically(deploy_kit, device):
    v1, bad = version_of(deploy_kit["v1"]), version_of(deploy_kit["nosamples"])
    proc = local_deploy(deploy_kit["nosamples"], device, "--doctor")
    assert proc.returncode != 0
    assert "doctor failed on version {}".format(bad) in proc.stdout and "rolled back to {}".format(v1) in proc.stdout
    st = status(device)
    assert st["current"] == v1 and os.path.realpath(device / "current") == str(device / "versions" / v1)
    assert st["checks"]["doctor"]["ok"] is False and st["checks"]["doctor"]["version"] == bad
    assert st["last"]["action"] == "auto-rollback: doctor failed"


def test_device_side_refuses_bad_names_and_short_uploads(tmp_path):
    from edgetool.runtime.target.install import Target
    from edgetool.runtime.errors import DeployError, UsageError

    with pytest.raises(DeployError, match="nothing deployed"):
        Target(str(tmp_path / "none")).rollback()
    assert not (tmp_path / "none").exists()
    t = Target(str(tmp_path / "d"))
    for bad in ("../x", "a/../../b", "/etc/passwd", ".hidden", "a b"):
        with pytest.raises(UsageError):
            t.receive("v1", bad, 1, "0" * 64, None)
    for bad in ("../v", "v/1", "", "-v"):
        with pytest.raises(UsageError):
            t.prepare(bad)
    t.prepare("v1")
    import io

    with pytest.raises(DeployError, match="received 3 bytes"):
        t.receive("v1", "base.onnx", 10, "0" * 64, io.BytesIO(b"abc"))
    assert os.listdir(tmp_path / "d" / "staging" / "v1") == []
    import hashlib

    def framed(name, data, declared=None):
        head = {
            "file": name,
            "size": len(data) if declared is None else declared,
            "sha256": hashlib.sha256(data).hexdigest(),
        }
        return json.dumps(head).encode() + b"\n" + data

    stream = io.BytesIO(framed("manifest.json", b"{}") + framed("deltas/a.zst", b"xy", declared=5))
    with pytest.raises(DeployError, match="received 2 bytes"):  # the upload stopped inside the second file
        t.receive_stream("v1", stream)
    assert t.prepare("v1")["present"] == {"manifest.json": hashlib.sha256(b"{}").hexdigest()}
    with pytest.raises(DeployError, match="malformed upload header"):
        t.receive_stream("v1", io.BytesIO(b"not json\n"))
    with pytest.raises(DeployError, match="no previous version"):
        t.rollback()


def test_deploy_commands_work_without_torch(deploy_kit, tmp_path):
    from test_layering import run_blocked

    root = tmp_path / "d"
    code = (
        "from edgetool.cli import main; import sys\n"
        "try:\n    main(sys.argv[1:])\nexcept SystemExit as e:\n"
        "    assert TORCH_TRIED == [], TORCH_TRIED; raise\n"  # nothing on the way even tried to import torch
    )
    for args in (
        ["devices"],
        ["target", "trust", root, deploy_kit["keys"]["good"]["public"]],
        ["deploy", deploy_kit["v1"], "--to", root, "--device-profile", "cpu"],
        ["status", "--to", root],
    ):
        proc = run_blocked(code, *args)
        assert proc.returncode == 0, proc.stdout + proc.stderr


def test_failing_engine_build_rolls_back_automatically(deploy_kit, device):
    try:
        import tensorrt  # noqa: F401

        pytest.skip("TensorRT is installed here, so engine build would not fail")
    except ImportError:
        pass
    v1, v2 = version_of(deploy_kit["v1"]), version_of(deploy_kit["v2"])
    proc = no_traceback(
        run_cli(
            "deploy", deploy_kit["v2"], "--to", device, "--device-profile", "orin-nano", "--engine-build", "--doctor"
        )
    )
    assert proc.returncode != 0
    assert "engine build failed on version {}".format(v2) in proc.stdout and "tensorrt" in proc.stdout.lower()
    assert "rolled back to {}".format(v1) in proc.stdout
    st = status(device)
    assert st["current"] == v1 and "doctor" not in st["checks"]  # doctor never ran after the failed build
