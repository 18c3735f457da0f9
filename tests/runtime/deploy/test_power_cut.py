"""Power cuts on the device side: SIGKILL at every step of prepare, receive, install, the switch,
prune, the doctor step and rollback, and while an update bundle is applied.  After each, `status`
is consistent, `current` is one whole verified version, and a re-run completes.  SIGTERM to a
three-host rollout at eight of those points: the --report agrees with every host's disk.  With
EDGETOOL_POWER_CUT_TABLE=FILE the table of points and outcomes is written there
(benchmarks/power_cut.py commits it)."""

import json
import os
import shutil

import pytest

from conftest import run_cli
from deploy_fixtures import deploy_kit_fixture, version_of  # noqa: F401  (fixture)
from update_fixtures import update_kit_fixture  # noqa: F401  (fixture)

pytest.importorskip("cryptography")

INSTALL = [
    "target:prepare",
    "target:receive:header",
    "target:receive:start",
    "target:receive:mid-file",
    "target:receive:before-rename",
    "target:receive:after-rename",
    "target:install:locked",
    "target:verify:signed",
    "target:install:verified",
    "target:install:moved",
    "target:install:before-state",
    "target:install:after-state",
    "target:install:after-link",
    "target:install:switched",
    "target:prune:before-remove",
    "target:install:pruned",
    "target:step:doctor",
]
ROLLBACK = [
    "target:rollback:locked",
    "target:rollback:before-state",
    "target:rollback:after-state",
    "target:rollback:after-link",
]
# SIGTERM to the workstation's deploy while the first host of a three-host rollout is at each of
# these device-side points (EDGETOOL_FAULT_SIGNAL_PARENT: the device side signals its parent).
ROLLOUT = [
    "target:prepare",
    "target:receive:header",
    "target:receive:mid-file",
    "target:install:locked",
    "target:install:before-state",
    "target:install:after-link",
    "target:prune:before-remove",
    "target:step:doctor",
]
# An update bundle's install: the same steps, and the apply (decode the base delta, rebuild the full
# bundle in ROOT/.apply/<version>, verify it) between the signature and the move into versions/.
UPDATE = [
    "target:receive:mid-file",
    "target:verify:signed",
    "target:update:decoded",
    "target:update:built",
    "target:update:verified",
    "target:install:moved",
    "target:install:after-state",
    "target:install:switched",
]
TABLE = []
ROLLOUT_TABLE = []


@pytest.fixture(scope="module")
def template(deploy_kit, tmp_path_factory):
    """A device root serving v2, with v1 kept: the state every cut starts from."""
    root = tmp_path_factory.mktemp("cut") / "root"
    assert run_cli("target", "trust", root, deploy_kit["keys"]["good"]["public"]).returncode == 0
    for v in ("v1", "v2"):
        proc = run_cli("deploy", deploy_kit[v], "--to", root, "--device-profile", "cpu")
        assert proc.returncode == 0, proc.stderr
    return root


def consistent(root):
    """status agrees with the disk, and current is one whole version whose every file verifies."""
    from edgetool.runtime.bundle.reader import Bundle
    from edgetool.runtime.target.install import Target

    st = Target(str(root)).status()
    assert st["state_error"] is None, st["state_error"]
    assert st["current"] in st["versions"], st
    assert Target(str(root)).state().get("current") == st["current"]
    with Bundle.open(os.path.join(str(root), "versions", st["current"])) as b:
        b.verify()
    return st["current"]


def record(point, killed, after, rerun):
    TABLE.append({"point": point, "killed": killed, "current_after_cut": after, "rerun": rerun})
    dump()


def dump():
    path = os.environ.get("EDGETOOL_POWER_CUT_TABLE")
    if path:
        with open(path, "w") as f:
            json.dump({"points": TABLE, "rollout": ROLLOUT_TABLE}, f, indent=1, allow_nan=False)


@pytest.mark.parametrize("point", INSTALL)
def test_a_cut_during_install_leaves_a_whole_version(point, template, deploy_kit, tmp_path):
    root = tmp_path / "root"
    shutil.copytree(template, root, symlinks=True)
    v2, v3 = version_of(deploy_kit["v2"]), version_of(deploy_kit["v3"])
    args = ["deploy", deploy_kit["v3"], "--to", root, "--device-profile", "cpu", "--keep", "2", "--doctor"]
    proc = run_cli(*args, env={"EDGETOOL_FAULT_KILL": point})
    assert proc.returncode != 0 and "Traceback" not in proc.stderr, (point, proc.stdout, proc.stderr)
    after = consistent(root)
    assert after in (v2, v3), point
    proc = run_cli(*args)
    assert proc.returncode == 0, (point, proc.stdout, proc.stderr)
    assert consistent(root) == v3
    record(point, True, "new" if after == v3 else "previous", "completed")


@pytest.mark.parametrize("point", ROLLBACK)
def test_a_cut_during_rollback_leaves_a_whole_version(point, template, deploy_kit, tmp_path):
    root = tmp_path / "root"
    shutil.copytree(template, root, symlinks=True)
    v1, v2 = version_of(deploy_kit["v1"]), version_of(deploy_kit["v2"])
    proc = run_cli("rollback", "--to", root, env={"EDGETOOL_FAULT_KILL": point})
    assert proc.returncode != 0 and "Traceback" not in proc.stderr, (point, proc.stderr)
    after = consistent(root)
    assert after in (v1, v2)
    if after == v2:  # the cut came before the switch committed: the operator runs it again
        assert run_cli("rollback", "--to", root).returncode == 0
    assert consistent(root) == v1
    record(point, True, "rolled back" if after == v1 else "not yet", "completed")


@pytest.mark.parametrize("point", ROLLOUT)
def test_a_signal_during_a_rollout_leaves_each_host_whole_and_reported(point, template, deploy_kit, tmp_path):
    """SIGTERM to `deploy` while its first host is at POINT: exit 143 after the summary and the
    --report; the report agrees with every host's disk (ok: the new version serves; stopped or
    skipped: the previous one, untouched); the same command run again completes everywhere."""
    import signal

    roots = []
    for i in range(3):
        roots.append(tmp_path / "root{}".format(i))
        shutil.copytree(template, roots[-1], symlinks=True)
    v2, v3 = version_of(deploy_kit["v2"]), version_of(deploy_kit["v3"])
    report = tmp_path / "report.jsonl"
    to = [a for r in roots for a in ("--to", r)]
    args = ["deploy", deploy_kit["v3"], *to, "--device-profile", "cpu", "--keep", "2", "--doctor", "--jobs", "1"]
    proc = run_cli(*args, "--report", report, env={"EDGETOOL_FAULT_SIGNAL_PARENT": point + "=SIGTERM"})
    out = proc.stdout + proc.stderr
    assert proc.returncode == 128 + signal.SIGTERM and "Traceback" not in out, (point, out)
    assert "3 host(s):" in proc.stdout, (point, out)
    recs = [json.loads(line) for line in report.read_text().splitlines()]
    assert [r["host"] for r in recs] == ["local:{}".format(r) for r in roots]
    assert all(r["result"] == "skipped" for r in recs[1:]), recs
    outcome = []
    for r, rec in zip(roots, recs):
        serving = consistent(r)
        assert serving == (v3 if rec["result"] == "ok" else v2), (point, rec, serving)
        outcome.append(rec["result"])
    proc = run_cli(*args)
    assert proc.returncode == 0, (point, proc.stdout, proc.stderr)
    assert all(consistent(r) == v3 for r in roots)
    ROLLOUT_TABLE.append({"signal_at": point, "hosts": outcome, "rerun": "completed"})
    dump()


@pytest.fixture(scope="module")
def update_template(update_kit, tmp_path_factory):
    """A device root serving v1 of the update kit: what an update applies to."""
    root = tmp_path_factory.mktemp("cut-update") / "root"
    assert run_cli("target", "trust", root, update_kit["keys"]["good"]["public"]).returncode == 0
    proc = run_cli("deploy", update_kit["v1"], "--to", root, "--device-profile", "cpu")
    assert proc.returncode == 0, proc.stderr
    return root


@pytest.mark.parametrize("point", UPDATE)
def test_a_cut_while_an_update_applies_leaves_a_whole_version(point, update_template, update_kit, tmp_path):
    """SIGKILL while the device applies an update: the base keeps serving or the whole new version does
    (its base.onnx the full bundle's, byte for byte), and the same deploy then completes."""
    from test_update import version_of_update

    root = tmp_path / "root"
    shutil.copytree(update_template, root, symlinks=True)
    v1, v2 = version_of(update_kit["v1"]), version_of_update(update_kit["u2"])
    args = ["deploy", update_kit["u2"], "--to", root, "--device-profile", "cpu"]
    proc = run_cli(*args, env={"EDGETOOL_FAULT_KILL": point})
    assert proc.returncode != 0 and "Traceback" not in proc.stderr, (point, proc.stdout, proc.stderr)
    after = consistent(root)
    assert after in (v1, v2), point
    proc = run_cli(*args)
    assert proc.returncode == 0, (point, proc.stdout, proc.stderr)
    assert consistent(root) == v2
    want = open(os.path.join(update_kit["full2"], "base.onnx"), "rb").read()
    assert open(os.path.join(str(root), "current", "base.onnx"), "rb").read() == want
    assert not os.listdir(os.path.join(str(root), "staging"))
    record("update " + point, True, "new" if after == v2 else "previous", "completed")
