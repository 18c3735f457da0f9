"""Bundles through the real Mender client (Debian's mender-client, standalone mode) and the update module
`edgetool-bundle`, on a scratch device (mender_device.py): install, commit, a second artifact, rollback,
refused artifacts (tampered, signed by an untrusted key, an older release, a relabelled one, corrupt
bytes, one that does not fit the device profile), a power cut between install and commit, a commit cut
halfway, the client killed during install, and `serve` following it all.

Each bad case ends with the client reporting failure and the previous bundle serving: the same
`current`, versions, staging and state on disk, the same predictions, the same provides in Mender."""

import json
import os
import shutil
import subprocess

import pytest

from conftest import run_cli
from deploy_fixtures import make_bundle, tamper_one_byte, version_of
from mender_device import DEVICE_TYPE, MenderDevice, needs_client

pytest.importorskip("cryptography")
pytest.importorskip("onnxruntime")


def artifact(bundle, out):
    proc = run_cli("mender", "artifact", bundle, "--out", out, "--device-type", DEVICE_TYPE)
    assert proc.returncode == 0, proc.stderr
    return str(out)


def relabelled(bundle, out, release):
    """*bundle*'s payload under a header that provides another release (mender-artifact used directly)."""
    from edgetool.runtime.bundle.reader import Bundle
    from edgetool.runtime.deploy.driver import Source
    from edgetool.runtime.mender.artifact import PAYLOAD, write_payload

    folder = os.path.join(os.path.dirname(str(out)), "relabelled")
    os.makedirs(folder)
    with Bundle.open(bundle) as b:
        source = Source(b)
        write_payload(source, os.path.join(folder, PAYLOAD))
    argv = ["mender-artifact", "write", "module-image", "-T", "edgetool-bundle", "-n", "relabelled"]
    argv += ["-t", DEVICE_TYPE, "-f", os.path.join(folder, PAYLOAD), "-o", str(out)]
    argv += ["-p", "edgetool-bundle.version:" + source.version, "-p", "edgetool-bundle.release:{}".format(release)]
    subprocess.run(argv, check=True, capture_output=True)
    return str(out)


@pytest.fixture(scope="module")
def kit(tmp_path_factory):
    """Signed bundles v1 (release 10), v2 (20), old (5) and their artifacts, and bad artifacts of v2."""
    needs_client()
    from edgetool.runtime.bundle.signature import keygen, sign_bundle

    d = tmp_path_factory.mktemp("mender-kit")
    kit = {"key": keygen(str(d / "release"))}
    for name, seed, release in (("v1", 1, 10), ("v2", 2, 20), ("old", 3, 5)):
        kit[name] = make_bundle(d / name, seed=seed, release=release)
        sign_bundle(kit[name], kit["key"]["private"])
        kit[name + ".mender"] = artifact(kit[name], d / (name + ".mender"))
    tampered = str(d / "tampered")
    shutil.copytree(kit["v2"], tampered)
    tamper_one_byte(tampered)  # manifest.json changed after signing
    kit["tampered.mender"] = artifact(tampered, d / "tampered.mender")
    untrusted = str(d / "untrusted")
    shutil.copytree(kit["v2"], untrusted)
    sign_bundle(untrusted, keygen(str(d / "other"))["private"])
    kit["untrusted.mender"] = artifact(untrusted, d / "untrusted.mender")
    data = bytearray(open(kit["v2.mender"], "rb").read())
    data[len(data) // 2] ^= 0xFF  # inside the compressed payload
    kit["corrupt.mender"] = str(d / "corrupt.mender")
    open(kit["corrupt.mender"], "wb").write(bytes(data))
    kit["relabelled.mender"] = relabelled(kit["v2"], d / "relabelled.mender", 99)
    kit["version"] = {n: version_of(kit[n]) for n in ("v1", "v2", "old")}
    return kit


def predictions(bundle, images):
    proc = run_cli("classify", bundle, *images, "--json")
    assert proc.returncode == 0, proc.stderr
    return [json.loads(ln) for ln in proc.stdout.splitlines()]


def ok(proc):
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr
    return proc


def installed(kit, tmp_path, *names):
    """A scratch device with the module, the key trusted, and each of *names* installed and committed."""
    dev = MenderDevice(tmp_path / "device", kit["key"]["public"])
    for name in names:
        ok(dev.mender("install", kit[name + ".mender"]))
        ok(dev.mender("commit"))
    return dev


def agree(dev, kit, name, counter=None):
    """Mender's provides, the deploy root's state and what serves all name the same version and release;
    the anti-rollback counter is that release (or *counter*: a higher one, from a commit cut halfway)."""
    version = kit["version"][name]
    provides = dev.provides()
    assert provides["artifact_name"] == version and provides["edgetool-bundle.version"] == version
    status = json.loads(ok(run_cli("target", "status", dev.root, "--json")).stdout)
    assert status["current"] == version == dev.current()
    release = json.load(open(os.path.join(dev.root, "current", "manifest.json")))["release"]
    assert provides["edgetool-bundle.release"] == str(release)
    assert status["highest_release"] == (counter or release)


def test_install_commit_classify_install_v2_rollback_classify(kit, tmp_path, sample_pngs):
    dev = MenderDevice(tmp_path / "device", kit["key"]["public"])
    assert "edgetool target trust {} KEY.pub".format(dev.root) in dev.install_output
    v1, v2 = kit["version"]["v1"], kit["version"]["v2"]
    proc = ok(dev.mender("install", kit["v1.mender"]))
    said = dev.module_lines(proc)
    assert said[0].startswith("edgetool-bundle Download: received {} (6 files), signed by key".format(v1)), said
    assert "release 10, fits: " in said[0] and said[1].startswith("edgetool-bundle ArtifactInstall: staged " + v1)
    assert dev.current() is None  # staged, not switched before the commit
    ok(dev.mender("commit"))
    agree(dev, kit, "v1")
    served_v1 = predictions(kit["v1"], sample_pngs)
    assert predictions(os.path.join(dev.root, "current"), sample_pngs) == served_v1
    assert predictions(kit["v2"], sample_pngs) != served_v1  # the two versions tell apart
    ok(dev.mender("install", kit["v2.mender"]))
    assert dev.current() == v1 and sorted(os.listdir(os.path.join(dev.root, "versions"))) == sorted([v1, v2])
    assert predictions(os.path.join(dev.root, "current"), sample_pngs) == served_v1
    proc = ok(dev.mender("rollback"))
    assert "edgetool-bundle ArtifactRollback: current {}; {} removed".format(v1, v2) in dev.module_lines(proc)
    assert os.listdir(os.path.join(dev.root, "versions")) == [v1]
    agree(dev, kit, "v1")
    assert predictions(os.path.join(dev.root, "current"), sample_pngs) == served_v1
    ok(dev.mender("install", kit["v2.mender"]))
    ok(dev.mender("commit"))
    agree(dev, kit, "v2")
    assert predictions(os.path.join(dev.root, "current"), sample_pngs) == predictions(kit["v2"], sample_pngs)


@pytest.mark.parametrize(
    "bad, said",
    [
        ("tampered", "signature does not match manifest.json (modified after signing?)"),
        ("untrusted", "which this device does not trust"),
        ("old", "release 5 is older than release 10 installed here before"),
        ("relabelled", "the artifact provides release 99 but the bundle's signed manifest says release 20; refused"),
        ("corrupt", None),  # the client's checksum or our receive, whichever sees it first
    ],
)
def test_a_refused_artifact_fails_the_deployment_and_the_previous_bundle_serves(kit, tmp_path, sample_pngs, bad, said):
    dev = installed(kit, tmp_path, "v1")
    before, provides = dev.on_disk(), dev.provides()
    proc = dev.mender("install", kit[bad + ".mender"])
    assert proc.returncode != 0 and "Download failed" in proc.stderr, proc.stderr
    errors = [ln for ln in dev.module_lines(proc) if ln.startswith("error: ")]
    if said:
        assert len(errors) == 1 and said in errors[0], proc.stderr
    assert dev.on_disk() == before and dev.provides() == provides
    agree(dev, kit, "v1")
    assert predictions(os.path.join(dev.root, "current"), sample_pngs) == predictions(kit["v1"], sample_pngs)
    assert dev.mender("commit").returncode == 2  # nothing in progress: the client reports the failure as final


def test_a_bundle_that_does_not_fit_the_device_profile_is_refused_at_download(kit, tmp_path):
    from edgetool.runtime import device_profiles

    tight = dict(device_profiles.load("cpu"), name="tight", memory_budget_mb=310)  # the bundle needs 313 MiB
    (tmp_path / "tight.json").write_text(json.dumps(tight))
    dev = MenderDevice(tmp_path / "device", kit["key"]["public"], profile=str(tmp_path / "tight.json"))
    before = dev.on_disk()
    proc = dev.mender("install", kit["v1.mender"])
    assert proc.returncode != 0 and "Download failed" in proc.stderr, proc.stderr
    errors = [ln for ln in dev.module_lines(proc) if ln.startswith("error: ")]
    assert len(errors) == 1 and "bundle does not fit tight: needs" in errors[0], proc.stderr
    assert dev.on_disk() == before and before[0] is None
    assert dev.mender("show-artifact").stdout.strip() == "factory-image"  # as the device came


def test_a_power_cut_between_install_and_commit_leaves_the_previous_version_serving(kit, tmp_path, sample_pngs):
    dev = installed(kit, tmp_path, "v1")
    v1, v2 = kit["version"]["v1"], kit["version"]["v2"]
    ok(dev.mender("install", kit["v2.mender"]))
    # The power goes here: in standalone mode nothing runs between install and commit, and every
    # call below is a process of its own on what the disk holds, as after the reboot.
    assert dev.on_disk()[:3] == (v1, sorted([v1, v2]), [])
    agree(dev, kit, "v1")
    assert predictions(os.path.join(dev.root, "current"), sample_pngs) == predictions(kit["v1"], sample_pngs)
    ok(dev.mender("commit"))  # after the reboot the operator (or the server) decides: here, commit
    agree(dev, kit, "v2")


def test_a_commit_cut_after_the_state_write_is_rolled_back_by_the_client(kit, tmp_path, sample_pngs):
    dev = installed(kit, tmp_path, "v1")
    v1, v2 = kit["version"]["v1"], kit["version"]["v2"]
    ok(dev.mender("install", kit["v2.mender"]))
    proc = dev.mender("commit", env={"EDGETOOL_FAULT_KILL": "target:install:after-state"})
    assert proc.returncode != 0 and "Commit failed" in proc.stderr, proc.stderr
    said = dev.module_lines(proc)
    assert "edgetool-bundle ArtifactRollback: current {} (switched back from {})".format(v1, v2) in said, said
    agree(dev, kit, "v1", counter=20)  # the state named v2 before the cut: the counter stays (fails closed)
    assert predictions(os.path.join(dev.root, "current"), sample_pngs) == predictions(kit["v1"], sample_pngs)


def test_the_client_killed_during_install_leaves_the_previous_version_serving(kit, tmp_path):
    dev = installed(kit, tmp_path, "v1")
    v1, v2 = kit["version"]["v1"], kit["version"]["v2"]
    # SIGKILL to the client while the module has just moved v2 into versions/ (the module ends its step)
    proc = dev.mender("install", kit["v2.mender"], env={"EDGETOOL_FAULT_SIGNAL_PARENT": "target:install:moved=SIGKILL"})
    assert proc.returncode == -9 or proc.returncode == 137, proc.stderr
    agree(dev, kit, "v1")
    assert dev.mender("commit").returncode == 2  # the client lost the deployment: nothing to commit
    agree(dev, kit, "v1")
    ok(dev.mender("install", kit["v2.mender"]))  # a new deployment takes the copy already there
    ok(dev.mender("commit"))
    agree(dev, kit, "v2")
    assert dev.on_disk()[1] == sorted([v1, v2])


def test_serve_follows_a_mender_deployment_as_it_follows_an_ssh_deploy(kit, tmp_path):
    pytest.importorskip("cv2", reason="OpenCV is not installed (pip install 'edgetool[camera]')")
    from serve_util import Served, make_video

    dev = installed(kit, tmp_path, "v1")
    v1, v2 = kit["version"]["v1"], kit["version"]["v2"]
    served = Served(dev.root, make_video(str(tmp_path / "scene.avi")))
    try:
        served.wait_for(v1)
        ok(dev.mender("install", kit["v2.mender"]))
        served.wait_for(v1)  # installed, not committed: v1 still serves
        ok(dev.mender("rollback"))
        served.wait_for(v1)
        ok(dev.mender("install", kit["v2.mender"]))
        ok(dev.mender("commit"))
        served.wait_for(v2)
    finally:
        rc = served.stop()
    assert rc == 143, "\n".join(served.err)
    assert served.versions_in_order() == [v1, v2]
