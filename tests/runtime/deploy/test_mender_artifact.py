"""`edgetool mender artifact` and `edgetool mender install-module`, and the device side's install in the
steps Mender drives (check, stage, switch, withdraw) on a deploy root, without the Mender client."""

import os
import shutil
import stat
import subprocess

import pytest

from conftest import one_error_line, run_cli
from deploy_fixtures import make_bundle, version_of

pytest.importorskip("cryptography")
MENDER_ARTIFACT = shutil.which("mender-artifact")
NO_TOOL = "mender-artifact is not installed (apt-get install mender-artifact)"


@pytest.fixture(scope="module")
def signed(tmp_path_factory):
    """A key and two signed bundles, releases 10 and 20."""
    from edgetool.runtime.bundle.signature import keygen, sign_bundle

    d = tmp_path_factory.mktemp("mender-bundles")
    out = {"key": keygen(str(d / "release"))}
    for name, seed, release in (("v1", 1, 10), ("v2", 2, 20)):
        out[name] = make_bundle(d / name, seed=seed, release=release)
        sign_bundle(out[name], out["key"]["private"])
    return out


@pytest.mark.skipif(MENDER_ARTIFACT is None, reason=NO_TOOL)
def test_mender_artifact_read_shows_the_type_the_device_type_and_the_release(signed, tmp_path):
    out = tmp_path / "v2.mender"
    types = ["--device-type", "jetson-orin", "--device-type", "x"]
    proc = run_cli("mender", "artifact", signed["v2"], "--out", out, *types)
    assert proc.returncode == 0, proc.stderr
    version = version_of(signed["v2"])
    assert "version {}, release 20, signed by key {}".format(version, signed["key"]["key_id"]) in proc.stdout
    read = subprocess.run([MENDER_ARTIFACT, "read", str(out)], capture_output=True, text=True)
    assert read.returncode == 0, read.stderr
    text = read.stdout
    assert "Name: {}\n".format(version) in text
    assert "Compatible devices: '[jetson-orin x]'" in text
    assert "Type:   edgetool-bundle\n" in text
    assert "edgetool-bundle.release: 20\n" in text and "edgetool-bundle.version: {}\n".format(version) in text
    assert 'Clears Provides: ["edgetool-bundle.*"]' in text and "name:     bundle.stream\n" in text
    named = tmp_path / "named.mender"
    proc = run_cli("mender", "artifact", signed["v1"], "--out", named, "--device-type", "t", "--name", "r1")
    assert proc.returncode == 0, proc.stderr
    text = subprocess.run([MENDER_ARTIFACT, "read", str(named)], capture_output=True, text=True).stdout
    assert "Name: r1\n" in text and "edgetool-bundle.version: {}\n".format(version_of(signed["v1"])) in text
    assert "edgetool-bundle.release: 10\n" in text


def test_mender_artifact_refuses_bad_input_with_one_line_and_writes_nothing(signed, tmp_path):
    out = tmp_path / "a.mender"
    cases = [
        ([signed["v1"], "--out", out, "--device-type", "two words"], "--device-type 'two words'"),
        ([signed["v1"], "--out", out, "--device-type", "t", "--name", "-n"], "--name '-n'"),
        ([signed["v1"], "--out", tmp_path / "no" / "a.mender", "--device-type", "t"], "does not exist"),
        ([tmp_path / "nobundle", "--out", out, "--device-type", "t"], "no such bundle"),
    ]
    for args, needle in cases:
        line = one_error_line(run_cli("mender", "artifact", *args))
        assert needle in line, line
    # without mender-artifact on the PATH: the Debian package is named
    proc = run_cli("mender", "artifact", signed["v1"], "--out", out, "--device-type", "t", env={"PATH": str(tmp_path)})
    line = one_error_line(proc)
    assert line == "error: mender-artifact is not installed; install the Debian package: sudo apt-get install " + (
        "mender-artifact"
    )
    assert os.listdir(tmp_path) == []  # no artifact, no temporary left


def test_install_module_writes_a_module_that_answers_and_runs_the_package(tmp_path):
    modules, root, tree = tmp_path / "modules", tmp_path / "root", tmp_path / "tree"
    modules.mkdir()
    tree.mkdir()
    proc = run_cli("mender", "install-module", root, "--device-profile", "cpu", "--modules-dir", modules)
    assert proc.returncode == 0, proc.stderr
    script = modules / "edgetool-bundle"
    assert "edgetool target trust {} KEY.pub".format(root) in proc.stdout
    assert stat.S_IMODE(script.stat().st_mode) == 0o755
    run = [str(script)]
    assert subprocess.run(run + ["SupportsRollback", str(tree)], capture_output=True, text=True).stdout == "Yes\n"
    assert subprocess.run(run + ["NeedsArtifactReboot", str(tree)], capture_output=True, text=True).stdout == "No\n"
    done = subprocess.run(run + ["Cleanup", str(tree)], capture_output=True, text=True)
    assert done.returncode == 0 and done.stderr == "", done.stderr  # nothing received: nothing to clean
    failed = subprocess.run(run + ["ArtifactCommit", str(tree)], capture_output=True, text=True)
    assert one_error_line(failed).endswith("missing (the Download state did not run for this deployment)")
    assert not root.exists()  # the module changed nothing


@pytest.mark.parametrize(
    "args, needle",
    [
        (["--device-profile", "no-such-profile"], "unknown device profile"),
        (["--device-profile", "cpu", "--keep", "1"], "--keep must be >= 2"),
        (["--device-profile", "cpu", "--modules-dir", "{tmp}/none"], "no such folder"),
    ],
)
def test_install_module_refuses_bad_input_with_one_line(tmp_path, args, needle):
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    modules = tmp_path / "modules"
    modules.mkdir()
    if "--modules-dir" not in args:
        args += ["--modules-dir", str(modules)]
    line = one_error_line(run_cli("mender", "install-module", tmp_path / "root", *args))
    assert needle in line, line
    proc = run_cli("mender", "install-module", "a\nb", "--device-profile", "cpu", "--modules-dir", modules)
    line = one_error_line(proc)
    assert "control character" in line
    assert os.listdir(modules) == []


def receive_payload(target, bundle, tmp_path):
    """What the update module's Download receives: the artifact's payload, through receive_stream."""
    from edgetool.runtime.bundle.reader import Bundle
    from edgetool.runtime.deploy.driver import Source
    from edgetool.runtime.mender.artifact import write_payload

    payload = str(tmp_path / "{}.stream".format(os.path.basename(bundle)))
    with Bundle.open(bundle) as b:
        source = Source(b)
        write_payload(source, payload)
    with open(payload, "rb") as f:
        got = target.receive_stream(source.version, f)
    assert len(got["received"]) == len(source.files)
    return source.version


def test_the_steps_mender_drives_keep_the_guarantees_of_an_install(signed, tmp_path):
    from edgetool.runtime.errors import DeployError
    from edgetool.runtime.target.phased import Phased

    t = Phased(str(tmp_path / "root"))
    t.trust(signed["key"]["public"])
    v1 = receive_payload(t, signed["v1"], tmp_path)
    assert t.check(v1)["release"] == 10 and t.current() is None
    staged = t.stage(v1)
    assert staged == {"version": v1, "current": None, "placed": True} and t.current() is None
    assert t.counter() == (0, None)  # a version placed on a new root is not read as a lost counter
    assert t.switch(v1)["release"] == 10 and t.current() == v1
    v2 = receive_payload(t, signed["v2"], tmp_path)
    t.check(v2)
    t.stage(v2)
    assert t.current() == v1 and sorted(os.listdir(t.p("versions"))) == sorted([v1, v2])
    res = t.withdraw(v2, v1, True, "rollback: test")  # before the switch: the copy goes, v1 never moved
    assert res["removed"] and res["switched_back_to"] is None and os.listdir(t.p("versions")) == [v1]
    # a newer release installed meanwhile: a version staged earlier is refused at the switch
    receive_payload(t, signed["v2"], tmp_path)
    t.stage(v2)
    st = t.state()
    st["highest_release"] = 30
    t.save_state(st)
    with pytest.raises(DeployError, match="release 20 is older than release 30"):
        t.switch(v2)
    assert t.current() == v1
