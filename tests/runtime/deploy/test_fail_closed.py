"""Fail closed on the device: an anti-rollback counter that cannot be read refuses installs, trust
and revocation go by a key's fingerprint wherever its file is, and two uploads of one version into
one root do not race.  Through the CLI, on local targets (the SSH cases are in test_deploy_ssh.py)."""

import json
import os
import shutil

import pytest

from conftest import one_error_line, run_cli
from deploy_fixtures import deploy, deploy_kit_fixture, make_bundle, snapshot, status, version_of  # noqa: F401  (fixture)

pytest.importorskip("cryptography")

# what a lost or damaged counter looks like in state.json (None: the file is deleted)
CORRUPT = {
    "deleted": None,
    "emptied": "{}",
    "nan": '{"highest_release": NaN}',
    "boolean": '{"highest_release": true}',
    "negative": '{"highest_release": -1}',
    "float": '{"highest_release": 20.0}',
    "string": '{"highest_release": "20"}',
    "list": '{"highest_release": [20]}',
    "null": '{"highest_release": null}',
}


@pytest.fixture(scope="module")
def releases(deploy_kit, tmp_path_factory):
    """Signed bundles with releases 10 (old), 20 (new) and 30 (newer)."""
    from edgetool.runtime.bundle.signature import sign_bundle

    d = tmp_path_factory.mktemp("releases")
    out = {}
    for name, seed, release in (("old", 21, 10), ("new", 22, 20), ("newer", 23, 30)):
        out[name] = make_bundle(d / name, seed=seed, release=release)
        sign_bundle(out[name], deploy_kit["keys"]["good"]["private"])
    return out


@pytest.fixture(scope="module")
def serving_new(releases, deploy_kit, tmp_path_factory):
    """A device root that installed release 20 (its counter: 20)."""
    root = tmp_path_factory.mktemp("template") / "root"
    assert run_cli("target", "trust", root, deploy_kit["keys"]["good"]["public"]).returncode == 0
    proc = deploy(releases["new"], root)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return root


def damaged(template, tmp_path, case):
    root = tmp_path / "root"
    shutil.copytree(str(template), str(root), symlinks=True)
    state = root / "state.json"
    if CORRUPT[case] is None:
        state.unlink()
    else:
        state.write_text(CORRUPT[case])
    return root


def stage(bundle, root):
    """The files of *bundle* received into ROOT/staging/<version>, as `target receive` leaves them."""
    version = version_of(bundle)
    shutil.copytree(bundle, str(root / "staging" / version))
    return version


@pytest.mark.parametrize("case", sorted(CORRUPT))
def test_an_unreadable_counter_refuses_an_older_release(case, releases, serving_new, tmp_path):
    root = damaged(serving_new, tmp_path, case)
    before = snapshot(str(root))
    # through deploy: refused before a byte is sent
    proc = deploy(releases["old"], root)
    one_error_line(proc)
    out = proc.stdout + proc.stderr  # the host's line of the summary says why
    assert "anti-rollback counter" in out and "reset-counter" in out and "--allow-downgrade" in out, out
    assert snapshot(str(root)) == before and os.listdir(root / "staging") == []
    # the device side on its own: the staged version is refused and dropped, nothing switches
    version = stage(releases["old"], root)
    proc = run_cli("target", "install", root, version)
    line = one_error_line(proc)
    assert "anti-rollback counter" in line, line
    assert snapshot(str(root)) == before and os.listdir(root / "staging") == []
    st = status(root)
    assert st["highest_release"] is None and st["counter_error"], st
    assert "anti-rollback counter unknown" in run_cli("status", "--to", root).stdout


@pytest.mark.parametrize("case", ["deleted", "nan"])
def test_allow_downgrade_installs_and_rebuilds_the_counter(case, releases, serving_new, tmp_path):
    root = damaged(serving_new, tmp_path, case)
    proc = deploy(releases["old"], root, "--allow-downgrade")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    st = status(root)
    assert st["current"] == version_of(releases["old"])
    assert st["highest_release"] == 20 and st["counter_error"] is None  # from the versions installed here
    assert st["downgrades"] and st["downgrades"][-1]["counter_lost"]
    one_error_line(deploy(releases["old"], root))  # refused again: the counter is back


def test_reset_counter_says_what_it_does(releases, serving_new, tmp_path):
    root = damaged(serving_new, tmp_path, "string")
    proc = run_cli("target", "reset-counter", root)
    assert proc.returncode == 0, proc.stderr
    assert "anti-rollback counter set to 20 (was '20')" in proc.stdout, proc.stdout
    assert "releases below 20 are refused" in proc.stdout
    proc = deploy(releases["old"], root)
    one_error_line(proc)
    assert "release 10 is older than release 20" in proc.stdout
    assert deploy(releases["newer"], root).returncode == 0
    assert status(root)["highest_release"] == 30
    proc = run_cli("target", "reset-counter", root, "--release", "-3")
    assert "--release must be an integer >= 0" in one_error_line(proc)


def test_a_new_root_starts_its_counter_and_repair_keeps_a_higher_one(releases, deploy_kit, tmp_path):
    root = tmp_path / "fresh"
    assert run_cli("target", "trust", root, deploy_kit["keys"]["good"]["public"]).returncode == 0
    assert status(root)["highest_release"] == 0  # never initialised: no state, nothing installed
    assert deploy(releases["old"], root).returncode == 0
    assert json.loads((root / "state.json").read_text())["highest_release"] == 10
    st = json.loads((root / "state.json").read_text())
    st["highest_release"] = 25  # a counter above every version kept (the release-25 one was pruned)
    (root / "state.json").write_text(json.dumps(st))
    proc = run_cli("target", "repair", root)
    assert proc.returncode == 0 and "highest release 25" in proc.stdout, proc.stdout + proc.stderr


def test_untrust_removes_every_copy_of_a_key(deploy_kit, tmp_path):
    root = tmp_path / "device"
    good = deploy_kit["keys"]["good"]
    kid = good["key_id"]
    assert run_cli("target", "trust", root, good["public"]).returncode == 0
    shutil.copy(str(root / "trust" / (kid + ".pub")), str(root / "trust" / "backup.pub"))  # a copy by another name
    shutil.copy(good["public"], str(root / "trust" / "release.pub"))  # and keygen's own file
    assert status(root)["trusted_keys"] == [kid]
    assert deploy(deploy_kit["v1"], root).returncode == 0
    proc = run_cli("target", "untrust", root, kid)
    assert proc.returncode == 0, proc.stderr
    assert "revoked key {}".format(kid) in proc.stdout and "backup.pub" in proc.stdout and "release.pub" in proc.stdout
    assert os.listdir(root / "trust") == [] and status(root)["trusted_keys"] == []
    before = snapshot(str(root))
    proc = deploy(deploy_kit["v2"], root)
    one_error_line(proc)
    assert "does not trust" in proc.stdout, proc.stdout
    version = stage(deploy_kit["v2"], root)  # the device's own check refuses it too
    assert "does not trust" in one_error_line(run_cli("target", "install", root, version))
    assert snapshot(str(root)) == before
    assert "is not trusted here" in one_error_line(run_cli("target", "untrust", root, kid))


def test_a_key_is_trusted_by_its_content_whatever_its_file_name(deploy_kit, tmp_path):
    root = tmp_path / "device"
    (root / "trust").mkdir(parents=True)
    good = deploy_kit["keys"]["good"]
    shutil.copy(good["public"], str(root / "trust" / "release.pub"))  # trusted by hand, not by `target trust`
    assert status(root)["trusted_keys"] == [good["key_id"]]
    proc = deploy(deploy_kit["v1"], root)
    assert proc.returncode == 0, proc.stdout + proc.stderr  # the workstation agrees with the device
    assert status(root)["current_signed_by"] == good["key_id"]
    (root / "trust" / "junk.pub").write_text("not a key\n")  # a file no one can read as a key
    proc = deploy(deploy_kit["v2"], root)
    one_error_line(proc)
    assert "junk.pub: not a PEM public key" in proc.stdout
    assert "junk.pub: not a PEM public key" in run_cli("status", "--to", root).stdout


def test_one_root_named_twice_is_refused(deploy_kit, tmp_path):
    root = tmp_path / "device"
    assert run_cli("target", "trust", root, deploy_kit["keys"]["good"]["public"]).returncode == 0
    os.symlink(str(root), str(tmp_path / "alias"))
    for other in (root, tmp_path / "alias"):
        proc = run_cli("deploy", deploy_kit["v1"], "--to", root, "--to", other, "--device-profile", "cpu")
        assert "give each target once" in one_error_line(proc)
    assert not os.path.lexists(root / "current") and os.listdir(root / "staging") == []


def test_two_uploads_into_one_root_do_not_race(deploy_kit, tmp_path):
    """Two deploys of one bundle into one root at once (two workstations): the second upload waits
    for the first instead of writing the same .part files; both end installed."""
    import subprocess
    import sys
    import time

    root = tmp_path / "device"
    assert run_cli("target", "trust", root, deploy_kit["keys"]["good"]["public"]).returncode == 0
    cmd = [sys.executable, "-m", "edgetool", "deploy", deploy_kit["v1"], "--to", str(root), "--device-profile", "cpu"]
    slow = subprocess.Popen(cmd + ["--bwlimit", "32"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    staging = root / "staging" / version_of(deploy_kit["v1"])
    deadline = time.time() + 120
    while time.time() < deadline and not (staging / "base.onnx.part").exists():
        time.sleep(0.02)
    assert slow.poll() is None, "the throttled upload ended before the second began"
    fast = run_cli("deploy", deploy_kit["v1"], "--to", root, "--device-profile", "cpu")
    out, err = slow.communicate(timeout=300)
    assert slow.returncode == 0, out + err
    assert fast.returncode == 0, fast.stdout + fast.stderr
    st = status(root)
    assert st["current"] == version_of(deploy_kit["v1"]) and st["staging"] == []


def rollout_cmd(bundle, roots, report):
    import sys

    to = [a for r in roots for a in ("--to", str(r))]
    return [sys.executable, "-m", "edgetool", "deploy", bundle, *to, "--device-profile", "cpu", "--report", str(report)]


def fresh_roots(deploy_kit, tmp_path, n):
    roots = []
    for i in range(n):
        r = tmp_path / "dev{}".format(i)
        assert run_cli("target", "trust", r, deploy_kit["keys"]["good"]["public"]).returncode == 0
        roots.append(r)
    return roots


def report_of(report):
    assert sorted(f for f in os.listdir(report.parent) if f.startswith("." + report.name)) == []  # no temp left
    return [json.loads(line) for line in report.read_text().splitlines()]


def test_sigterm_during_the_uploads_of_a_rollout(deploy_kit, tmp_path):
    """SIGTERM (three times) while two of four hosts upload: they stop at once (nothing installed,
    what arrived stays staged), the other two never start; the summary and the report say so; 143."""
    import signal
    import subprocess
    import time

    roots = fresh_roots(deploy_kit, tmp_path, 4)
    report = tmp_path / "report.jsonl"
    cmd = rollout_cmd(deploy_kit["v1"], roots, report) + ["--jobs", "2", "--bwlimit", "16"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    version = version_of(deploy_kit["v1"])
    deadline = time.time() + 120
    while time.time() < deadline and not any((r / "staging" / version / "base.onnx.part").exists() for r in roots):
        time.sleep(0.02)
    assert proc.poll() is None, "the uploads ended before the signal"
    t0 = time.monotonic()
    for _ in range(3):  # repeated, as an impatient operator does: the report is still written
        proc.send_signal(signal.SIGTERM)
        time.sleep(0.05)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM, out + err
    assert time.monotonic() - t0 < 10, "the stop waited for the uploads"
    assert "Traceback" not in err and err.rstrip().endswith("terminated by SIGTERM"), err
    assert "4 host(s): 0 ok, 0 failed, 2 stopped, 2 skipped" in out, out
    recs = report_of(report)
    assert [r["result"] for r in recs] == ["stopped", "stopped", "skipped", "skipped"], recs
    assert all("SIGTERM" in r["error"] for r in recs)
    time.sleep(1.0)  # nothing installs after the command ended
    for r in roots:
        assert not os.path.lexists(r / "current") and os.listdir(r / "versions") == []
        assert not any(f.endswith(".part") for _, _, fs in os.walk(r / "staging") for f in fs)


def test_sigterm_during_an_install_of_a_rollout(deploy_kit, tmp_path):
    """SIGTERM while the first host installs: its install finishes (the switch is atomic) and is
    reported ok; no other host starts after the signal; the summary and the report say so."""
    import signal
    import subprocess

    roots = fresh_roots(deploy_kit, tmp_path, 4)
    report = tmp_path / "report.jsonl"
    env = dict(os.environ, EDGETOOL_FAULT_SIGNAL_PARENT="target:install:locked=SIGTERM")
    cmd = rollout_cmd(deploy_kit["v1"], roots, report) + ["--jobs", "1"]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 128 + signal.SIGTERM, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr and "4 host(s): 1 ok, 0 failed, 3 skipped" in proc.stdout, proc.stdout
    recs = report_of(report)
    assert [r["result"] for r in recs] == ["ok", "skipped", "skipped", "skipped"], recs
    assert "not started: stopped by SIGTERM" in recs[1]["error"]
    assert "the stop (SIGTERM) came during its install" in proc.stdout
    assert os.path.realpath(roots[0] / "current") == str(roots[0] / "versions" / version_of(deploy_kit["v1"]))
    for r in roots[1:]:
        assert not os.path.lexists(r / "current") and os.listdir(r / "staging") == []
