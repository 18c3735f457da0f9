"""Update bundles: the device rebuilds the full bundle of the new weights from the installed base and
a small exact delta, bit for bit; every bad update is one error line and nothing switches."""

import json
import os
import shutil

import pytest

from conftest import one_error_line, run_cli
from deploy_fixtures import deploy, deploy_kit_fixture, snapshot, status, version_of  # noqa: F401  (fixture)
from update_fixtures import base_delta, flip_byte, update_kit_fixture, variant  # noqa: F401  (fixture)

pytest.importorskip("cryptography")


def trusted_root(kit, tmp_path, *install):
    root = tmp_path / "device"
    assert run_cli("target", "trust", root, kit["keys"]["good"]["public"]).returncode == 0
    for name in install:
        proc = deploy(kit[name], root)
        assert proc.returncode == 0, proc.stdout + proc.stderr
    return str(root)


def classify_json(bundle, samples):
    proc = run_cli("classify", bundle, samples, "--json")
    assert proc.returncode == 0, proc.stderr
    return [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]


def test_an_update_gives_the_full_bundle_bit_for_bit(update_kit, tmp_path):
    from edgetool.runtime.bundle.reader import Bundle

    root = trusted_root(update_kit, tmp_path, "v1")
    report = tmp_path / "report.jsonl"
    proc = deploy(update_kit["u2"], root, "--report", report)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "update of base" in proc.stdout and "applied in" in proc.stdout, proc.stdout
    rec = json.loads(report.read_text())
    assert rec["update"]["update_of"] == version_of(update_kit["v1"]) and rec["update"]["reused"] == [
        "deltas/a.zst",
        "samples.npy",
    ]
    assert rec["update"]["apply_seconds"] < 1.0
    current = os.path.join(root, "current")
    with Bundle.open(current) as got, Bundle.open(update_kit["full2"]) as want:
        assert [(f.file, f.sha256) for f in got.model.files()] == [(f.file, f.sha256) for f in want.model.files()]
        for f in want.model.files():
            assert (
                open(os.path.join(current, f.file), "rb").read() == open(os.path.join(want.root, f.file), "rb").read()
            )
        assert got.model.release == 20
    sent = os.path.getsize(base_delta(update_kit["u2"]))
    assert sent < os.path.getsize(os.path.join(update_kit["full2"], "base.onnx")) // 20
    st = status(root)
    assert st["model"]["base"]["version"] == version_of(update_kit["v1"])
    assert [u["version"] for u in st["model"]["updates"]] == [os.path.basename(os.readlink(current))]
    text = run_cli("status", "--to", root).stdout
    assert "model     base " in text and "+ 1 update" in text, text
    shown = run_cli("inspect", current).stdout
    assert "updated     from version {}".format(version_of(update_kit["v1"])) in shown, shown


def test_an_update_classifies_as_the_full_bundle(update_kit, tmp_path):
    import numpy as np
    from PIL import Image

    root = trusted_root(update_kit, tmp_path, "v1", "u2")
    images = tmp_path / "images"
    images.mkdir()
    rng = np.random.RandomState(3)
    for i in range(6):
        Image.fromarray(rng.randint(0, 255, (28, 28), dtype=np.uint8), "L").save(images / "x{}.png".format(i))
    assert classify_json(os.path.join(root, "current"), images) == classify_json(update_kit["full2"], images)


def test_inspect_names_what_an_update_ships_and_reuses(update_kit):
    proc = run_cli("inspect", update_kit["u2"])
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert any(ln.startswith("applies to  base ") for ln in lines), proc.stdout
    assert "reused      deltas/a.zst, samples.npy (from the installed version)" in lines, proc.stdout
    assert any(ln.startswith("shipped     deltas/b.zst") for ln in lines), proc.stdout
    assert "signature   key {}".format(update_kit["keys"]["good"]["key_id"]) in lines, proc.stdout


def _unsigned(folder):
    os.remove(os.path.join(folder, "manifest.sig"))


def _truncated(folder):
    path = base_delta(folder)
    data = open(path, "rb").read()
    open(path, "wb").write(data[: len(data) // 2])


BAD = {
    "wrong base": ("u_other", None, ("v1",), "applies to base"),
    "base not installed": ("u2", None, (), "applies to base"),
    "tampered delta": ("u2", lambda f: flip_byte(base_delta(f)), ("v1",), "different sha256"),
    "truncated delta": ("u2", _truncated, ("v1",), "expected"),
    "unsigned update": ("u2", _unsigned, ("v1",), "unsigned"),
    "older update": ("u15", None, ("v1", "u2"), "older than release 20"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_a_bad_update_is_one_error_and_nothing_switches(case, update_kit, tmp_path):
    name, change, installed, words = BAD[case]
    root = trusted_root(update_kit, tmp_path, *installed)
    before = snapshot(root)
    bundle = variant(update_kit, name, tmp_path, change) if change else update_kit[name]
    proc = deploy(bundle, root)
    assert words in proc.stdout + proc.stderr, (case, proc.stdout, proc.stderr)
    one_error_line(proc)
    assert snapshot(root) == before, case
    assert not os.path.exists(os.path.join(root, ".apply", version_of_update(bundle)))


def version_of_update(folder):
    from edgetool.runtime.deploy.driver import Source
    from edgetool.runtime.deploy.sources import read_update

    return Source.of_update(folder, read_update(folder)).version


def stage(root, folder):
    """Every file of the update *folder* received by the device as deploy sends them; its version."""
    from edgetool.runtime.deploy.driver import Source
    from edgetool.runtime.deploy.sources import read_update
    from edgetool.runtime.target.install import Target

    src = Source.of_update(folder, read_update(folder))
    t = Target(root)
    for rel, size, sha in src.files:
        with open(os.path.join(folder, rel), "rb") as f:
            t.receive(src.version, rel, size, sha, f)
    return src.version


def _edit_manifest(folder, edit):
    path = os.path.join(folder, "manifest.json")
    m = json.load(open(path))
    edit(m)
    json.dump(m, open(path, "w"), indent=1)
    if os.path.exists(os.path.join(folder, "manifest.sig")):
        os.remove(os.path.join(folder, "manifest.sig"))


def _other_delta(folder):
    """The base delta replaced by another valid frame, its sha256 fixed in the manifest: it decodes, to other bytes."""
    from edgetool.runtime.bundle import codecs
    from edgetool.runtime.bundle.weights import sha256_bytes

    m = json.load(open(os.path.join(folder, "manifest.json")))
    data = codecs.encode("zstd", bytes(m["base_delta"]["raw_size"]))
    open(base_delta(folder), "wb").write(data)
    _edit_manifest(folder, lambda d: d["base_delta"].update(size=len(data), sha256=sha256_bytes(data)))


def _other_delta_and_raw(folder):
    from edgetool.runtime.bundle.weights import sha256_bytes

    _other_delta(folder)
    m = json.load(open(os.path.join(folder, "manifest.json")))
    raw = sha256_bytes(bytes(m["base_delta"]["raw_size"]))
    _edit_manifest(folder, lambda d: d["base_delta"].update(raw_sha256=raw))


DEVICE_BAD = {
    "a delta that decodes to other bytes": (_other_delta, "fails its sha256 check"),
    "a delta that gives another base": (_other_delta_and_raw, "does not give the base.onnx"),
    "a result that names another file": (
        lambda f: _edit_manifest(f, lambda d: d["reused"].append("deltas/zz.zst")),
        "are not the result's",
    ),
}


@pytest.mark.parametrize("case", sorted(DEVICE_BAD))
def test_the_device_checks_an_update_on_its_own(case, update_kit, tmp_path):
    """What the workstation cannot catch (the files as declared, the signature not required): the device
    rebuilds, checks and refuses, and nothing switches."""
    from edgetool.runtime.errors import EdgetoolError
    from edgetool.runtime.target.install import Target

    root = trusted_root(update_kit, tmp_path, "v1")
    assert run_cli("target", "config", root, "--accept-unsigned").returncode == 0
    change, words = DEVICE_BAD[case]
    version = stage(root, variant(update_kit, "u2", tmp_path, change))
    before = snapshot(root)
    with pytest.raises(EdgetoolError, match=words):
        Target(root).install(version)
    assert snapshot(root) == before
    assert not os.listdir(os.path.join(root, "staging")) and not os.path.exists(os.path.join(root, ".apply", version))


def test_the_device_refuses_an_update_of_a_base_it_does_not_hold(update_kit, tmp_path):
    from edgetool.runtime.errors import DeployError
    from edgetool.runtime.target.install import Target

    root = trusted_root(update_kit, tmp_path, "v1")
    version = stage(root, update_kit["u_other"])
    before = snapshot(root)
    with pytest.raises(DeployError, match="which is not installed .*installed here: .* base .*current"):
        Target(root).install(version)
    assert snapshot(root) == before and not os.listdir(os.path.join(root, "staging"))


def test_a_damaged_installed_base_refuses_the_update(update_kit, tmp_path):
    root = trusted_root(update_kit, tmp_path, "v1")
    flip_byte(os.path.join(root, "current", "base.onnx"), at=100)
    before = snapshot(root)
    proc = deploy(update_kit["u2"], root)
    one_error_line(proc)
    assert "base.onnx: sha256 mismatch" in proc.stdout, proc.stdout
    assert snapshot(root) == before


def test_a_rollback_after_an_update_serves_the_base_again(update_kit, tmp_path):
    root = trusted_root(update_kit, tmp_path, "v1", "u2")
    assert run_cli("rollback", "--to", root).returncode == 0
    st = status(root)
    assert st["current"] == version_of(update_kit["v1"]) and st["model"]["updates"] == []


def test_export_refuses_another_graph_or_other_scales(update_kit, deploy_kit, tmp_path):
    from edgetool.export.update import write_update
    from edgetool.runtime.errors import UsageError

    with pytest.raises(UsageError, match="scales of .* differ.*a full bundle is needed"):
        write_update(update_kit["full2"], deploy_kit["v1"], str(tmp_path / "u"))  # another calibration
    with pytest.raises(UsageError, match="the graph differs.*a full bundle is needed"):
        write_update(update_kit["full2"], deploy_kit["big"], str(tmp_path / "u"))  # another input and graph
    assert not os.path.exists(tmp_path / "u")


def test_an_update_of_an_update_is_refused_by_export(update_kit, tmp_path):
    from edgetool.toolchain.export_cli import export_update
    from edgetool.runtime.errors import UsageError

    with pytest.raises(UsageError, match="an update bundle; give the full bundle"):
        export_update("no-run", str(tmp_path / "u"), "zstd", "super-sub", None, update_kit["u2"])


def test_a_second_update_chains_on_the_full_bundle_of_the_first(update_kit, tmp_path):
    """Update 2 is made against the full bundle of update 1's weights: its base is what the device rebuilt."""
    from edgetool.export.update import write_update
    from edgetool.runtime.bundle.signature import sign_bundle
    from update_fixtures import networks, retrained, write

    base, sub = networks(0)
    third = retrained(retrained(base, 1), 4)
    full3 = write(tmp_path / "full3", third, [third, sub], 30)
    write_update(full3, update_kit["full2"], str(tmp_path / "u3"))
    sign_bundle(str(tmp_path / "u3"), update_kit["keys"]["good"]["private"])
    root = trusted_root(update_kit, tmp_path, "v1", "u2")
    proc = deploy(str(tmp_path / "u3"), root)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    cur = os.path.join(root, "current")
    assert open(os.path.join(cur, "base.onnx"), "rb").read() == open(os.path.join(full3, "base.onnx"), "rb").read()
    assert len(status(root)["model"]["updates"]) == 2
    shutil.rmtree(root)
