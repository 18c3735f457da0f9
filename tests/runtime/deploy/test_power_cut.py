"""Power cuts on the device side: SIGKILL at every step of prepare, receive, install, the switch,
prune, the doctor step and rollback.  After each, `status` is consistent, `current` is one whole
verified version, and a re-run completes.  With EDGETOOL_POWER_CUT_TABLE=FILE the table of
points and outcomes is written there (benchmarks/power_cut.py commits it)."""

import json
import os
import shutil

import pytest

from conftest import run_cli
from deploy_fixtures import deploy_kit_fixture, version_of  # noqa: F401  (fixture)

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
TABLE = []


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
    path = os.environ.get("EDGETOOL_POWER_CUT_TABLE")
    if path:
        with open(path, "w") as f:
            json.dump({"points": TABLE}, f, indent=1, allow_nan=False)


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
