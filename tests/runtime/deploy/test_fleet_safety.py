"""Anti-rollback, the device state read before the switch, repair, and a device side isolated
from the working folder: through the CLI, on local targets."""

import json
import os
import re
import shlex

import pytest

from conftest import run_cli
from deploy_fixtures import deploy, deploy_kit_fixture, make_bundle, snapshot, status, version_of  # noqa: F401  (fixture)

pytest.importorskip("cryptography")


@pytest.fixture(scope="module")
def releases(deploy_kit, tmp_path_factory):
    """Signed bundles with releases 10 (old) and 20 (new)."""
    from edgetool.runtime.bundle.signature import sign_bundle

    d = tmp_path_factory.mktemp("releases")
    out = {}
    for name, seed, release in (("old", 11, 10), ("new", 12, 20)):
        out[name] = make_bundle(d / name, seed=seed, release=release)
        sign_bundle(out[name], deploy_kit["keys"]["good"]["private"])
    return out


@pytest.fixture()
def root(deploy_kit, tmp_path):
    r = tmp_path / "device"
    assert run_cli("target", "trust", r, deploy_kit["keys"]["good"]["public"]).returncode == 0
    return r


def test_an_older_release_is_refused_unless_allowed(releases, root):
    assert deploy(releases["new"], root).returncode == 0
    before = snapshot(root)
    proc = deploy(releases["old"], root)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert "release 10 is older than release 20" in proc.stdout + proc.stderr
    assert "--allow-downgrade" in proc.stdout + proc.stderr
    assert snapshot(root)[0] == before[0]  # current unchanged
    assert status(root)["current"] == version_of(releases["new"]) and status(root)["highest_release"] == 20
    proc = deploy(releases["old"], root, "--allow-downgrade")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    st = status(root)
    assert st["current"] == version_of(releases["old"]) and st["highest_release"] == 20
    assert [d["release"] for d in st["downgrades"]] == [10]
    assert (
        "downgrade {} (release 10) allowed".format(version_of(releases["old"]))
        in run_cli("status", "--to", root).stdout
    )
    # an explicit rollback stays an operator action
    proc = run_cli("rollback", "--to", root)
    assert proc.returncode == 0 and status(root)["current"] == version_of(releases["new"])


def test_a_corrupt_state_switches_nothing_and_repair_rebuilds_it(releases, root):
    assert deploy(releases["old"], root).returncode == 0
    (root / "state.json").write_text("{ not json")
    before = snapshot(root)
    proc = deploy(releases["new"], root)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0 and "Traceback" not in out
    assert "state.json: cannot be used" in out and "edgetool target repair" in out
    assert snapshot(root) == before  # nothing switched, the state left as it was for the operator
    assert "cannot be used" in run_cli("status", "--to", root).stdout
    printed = re.search(r"`(edgetool target repair [^`]+)`", out).group(1)  # run as the error prints it
    proc = run_cli(*shlex.split(printed)[1:])
    assert proc.returncode == 0 and "highest release 10" in proc.stdout, proc.stderr
    assert status(root)["current"] == version_of(releases["old"])
    assert deploy(releases["new"], root).returncode == 0
    assert status(root)["current"] == version_of(releases["new"]) and status(root)["highest_release"] == 20


def test_an_unreadable_state_is_one_line(releases, root):
    if os.geteuid() == 0:
        pytest.skip("root reads a file whatever its mode")
    assert deploy(releases["old"], root).returncode == 0
    os.chmod(root / "state.json", 0)
    proc = deploy(releases["new"], root)
    assert proc.returncode != 0 and "cannot be used (Permission denied)" in proc.stdout + proc.stderr


def test_a_switch_cut_between_state_and_link_is_finished_next_time(releases, root):
    from edgetool.runtime.target.install import Target

    assert deploy(releases["old"], root).returncode == 0
    assert deploy(releases["new"], root).returncode == 0
    t = Target(str(root))
    old, new = version_of(releases["old"]), version_of(releases["new"])
    # the state names the new version, the link still the old one: a cut after the state write
    os.unlink(root / "current")
    os.symlink(os.path.join("versions", old), root / "current")
    assert t.state()["current"] == new and t.current() == old
    proc = run_cli("rollback", "--to", root)  # the next call finishes the switch, then rolls back
    assert proc.returncode == 0, proc.stderr
    assert t.current() == old and t.state()["previous"] == new


def test_local_deploy_ignores_a_checkout_in_the_working_folder(releases, root, tmp_path):
    import subprocess

    work = tmp_path / "work"
    (work / "edgetool").mkdir(parents=True)
    (work / "edgetool" / "__init__.py").write_text("raise ImportError('the working folder was imported')\n")
    env = dict(os.environ, EDGETOOL_THREADS="2")
    proc = subprocess.run(
        ["edgetool", "deploy", releases["new"], "--to", str(root), "--device-profile", "cpu", "--doctor"],
        cwd=str(work),
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for sub in (["status", "--to", str(root)], ["rollback", "--to", str(root)]):
        p = subprocess.run(["edgetool"] + sub, cwd=str(work), capture_output=True, text=True, env=env, timeout=600)
        assert "the working folder was imported" not in p.stderr, p.stderr


def test_export_release_flag(tiny_run, tmp_path):
    out = tmp_path / "b"
    proc = run_cli("export", tiny_run.path, "--out", out, "--release", "7")
    assert proc.returncode == 0, proc.stderr
    assert json.load(open(out / "manifest.json"))["release"] == 7
    proc = run_cli("export", tiny_run.path, "--out", tmp_path / "c", "--release", "-1")
    assert proc.returncode != 0 and "--release must be >= 0" in proc.stderr


def test_trust_is_checked_before_any_byte(deploy_kit, tmp_path):
    """An unsigned or untrusted bundle is refused before the upload (the device receives nothing),
    the refusal names `edgetool target trust`, and a fresh folder is left as it was."""
    fresh = tmp_path / "not a root"
    fresh.mkdir()
    (fresh / "keep.txt").write_text("mine")
    unsigned = tmp_path / "unsigned"
    import shutil

    shutil.copytree(deploy_kit["v1"], unsigned)
    os.remove(unsigned / "manifest.sig")
    proc = deploy(unsigned, fresh)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0 and "accepts only signed bundles" in out and "edgetool target trust" in out
    assert "bytes sent" not in out and sorted(os.listdir(fresh)) == ["keep.txt"]
    root = tmp_path / "device"
    assert run_cli("target", "trust", root, deploy_kit["keys"]["good"]["public"]).returncode == 0
    before = sorted(os.listdir(root))
    proc = deploy(deploy_kit["untrusted"], root)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0 and "does not trust" in out and "edgetool target trust" in out
    assert sorted(os.listdir(root)) == before and not os.listdir(root / "trust") == []
    assert not os.path.exists(root / "staging") or os.listdir(root / "staging") == []


def test_a_failed_write_leaves_no_partial_file(tmp_path):
    import io

    from edgetool.runtime.target.install import Target
    from edgetool.runtime.errors import DeployError

    t = Target(str(tmp_path / "device"))

    class Full(io.BytesIO):
        def read(self, n=-1):
            raise OSError(28, "No space left on device")

    with pytest.raises(DeployError, match="No space left on device"):
        t.receive("v1", "base.onnx", 10, "0" * 64, Full())
    assert os.listdir(tmp_path / "device" / "staging" / "v1") == []


def fleet(deploy_kit, tmp_path, trusted):
    roots = []
    for i, ok in enumerate(trusted):
        r = tmp_path / "dev{}".format(i)
        r.mkdir()
        if ok:
            assert run_cli("target", "trust", r, deploy_kit["keys"]["good"]["public"]).returncode == 0
        roots.append(r)
    return roots


def test_canary_then_waves_stop_after_k_failures(deploy_kit, tmp_path):
    roots = fleet(deploy_kit, tmp_path, [True, False, False, True, True])
    report = tmp_path / "report.jsonl"
    to = [a for r in roots for a in ("--to", r)]
    args = ["--canary", "1", "--max-failures", "1", "--jobs", "1", "--report", report]
    proc = run_cli("deploy", deploy_kit["v1"], *to, "--device-profile", "cpu", *args)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    recs = [json.loads(line) for line in report.read_text().splitlines()]
    assert [r["result"] for r in recs] == ["ok", "failed", "failed", "skipped", "skipped"]
    assert recs[0]["doctor"] is True and recs[0]["version"] == version_of(deploy_kit["v1"])
    assert all(set(r) >= {"host", "version", "release", "result", "time", "doctor"} for r in recs)
    assert "more than --max-failures 1" in recs[3]["error"]
    assert not os.path.exists(roots[3] / "current") and not os.path.exists(roots[4] / "current")
    assert "2 not started" in proc.stderr and "5 host(s): 1 ok, 2 failed, 2 skipped" in proc.stdout


def test_a_failed_canary_stops_the_rollout(deploy_kit, tmp_path):
    roots = fleet(deploy_kit, tmp_path, [True, False, True])
    to = [a for r in roots for a in ("--to", r)]
    proc = run_cli("deploy", deploy_kit["v1"], *to, "--device-profile", "cpu", "--canary", "2")
    assert proc.returncode != 0
    assert os.path.islink(roots[0] / "current") and not os.path.exists(roots[2] / "current")
    assert "skipped: a canary failed" in proc.stdout


def test_revoking_a_key(deploy_kit, tmp_path, root):
    kid = deploy_kit["keys"]["good"]["key_id"]
    assert deploy(deploy_kit["v1"], root).returncode == 0
    assert "key {}".format(kid) in run_cli("inspect", deploy_kit["v1"]).stdout
    proc = run_cli("target", "untrust", root, kid)
    assert proc.returncode == 0 and "revoked key {}".format(kid) in proc.stdout
    assert status(root)["trusted_keys"] == []
    proc = deploy(deploy_kit["v2"], root)
    assert proc.returncode != 0 and "does not trust" in proc.stdout + proc.stderr
    for bad in (kid, "not-hex!"):
        p = run_cli("target", "untrust", root, bad)
        assert p.returncode != 0 and p.stderr.startswith("error: ") and p.stderr.count("\n") == 1
