"""Engines saved into a bundle: atomic (kill -9 or an I/O error at each step leaves the previous
store valid), one engine per device profile and precision, leftovers of a stopped run removed."""

import os
import subprocess
import sys

import pytest

from edgetool.runtime.bundle.reader import Bundle
from edgetool.runtime.errors import BundleError, UsageError
from edgetool.runtime.trt import engine_store
from edgetool.runtime.trt.engine_store import add_engine

META = {"precision": "int8", "device_profile": "orin-nano", "tensorrt": "10.3.0", "device": "Orin"}
POINTS = ["engine:plan-written", "engine:plan-renamed", "engine:manifest-written", "engine:manifest-renamed"]
ADD = """
import sys
from edgetool.runtime.trt.engine_store import add_engine
add_engine(sys.argv[1], sys.argv[2].encode() * 1000, {"precision": "int8", "device_profile": "orin-nano",
           "tensorrt": "10.3.0", "device": "Orin"})
"""


def listed(bundle):
    """The engines the bundle lists, each read and checked against its sha256 (verify=True)."""
    with Bundle.open(bundle) as b:
        return {e["file"]: b.read_file(e) for e in b.manifest.get("engines", [])}


def files(bundle):
    out = []
    for root, _, names in os.walk(bundle):
        out += [os.path.relpath(os.path.join(root, n), bundle) for n in names]
    return sorted(out)


def test_add_replace_and_keep_other_slots(bundle_copy):
    a = add_engine(bundle_copy, b"plan A" * 100, META)
    assert a["file"].startswith("engines/orin-nano-int8-") and a["size"] == 600
    assert listed(bundle_copy) == {a["file"]: b"plan A" * 100}
    fp16 = add_engine(bundle_copy, b"plan F", dict(META, precision="fp16"))
    b = add_engine(bundle_copy, b"plan B" * 100, META)  # same profile and precision: replaces A
    assert listed(bundle_copy) == {fp16["file"]: b"plan F", b["file"]: b"plan B" * 100}
    assert not os.path.exists(os.path.join(bundle_copy, a["file"]))
    engines = [f for f in files(bundle_copy) if f.startswith("engines/")]
    assert engines == sorted([fp16["file"], b["file"]])


@pytest.mark.parametrize("point", POINTS)
def test_kill_9_at_each_step_keeps_a_valid_store(bundle_copy, point):
    first = add_engine(bundle_copy, b"first" * 1000, META)
    env = dict(os.environ, EDGETOOL_FAULT_KILL=point)
    proc = subprocess.run(
        [sys.executable, "-c", ADD, bundle_copy, "second"], env=env, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == -9, proc.stderr[-2000:]
    now = listed(bundle_copy)  # opens and verifies every listed file
    if point == "engine:manifest-renamed":
        assert list(now.values()) == [b"second" * 1000]
    else:
        assert now == {first["file"]: b"first" * 1000}
    proc = subprocess.run([sys.executable, "-c", ADD, bundle_copy, "third"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    now = listed(bundle_copy)
    assert list(now.values()) == [b"third" * 1000]
    # what the killed run left (temporary files, an unlisted plan, the replaced plan) is gone
    assert [f for f in files(bundle_copy) if f.startswith("engines/") or f.startswith(".")] == list(now)


@pytest.mark.parametrize("step", ["plan-temp", "plan-rename", "manifest-temp", "manifest-rename"])
def test_io_error_at_each_step_changes_nothing(bundle_copy, monkeypatch, step):
    first = add_engine(bundle_copy, b"first" * 100, META)
    before = {f: open(os.path.join(bundle_copy, f), "rb").read() for f in files(bundle_copy)}
    which, nth = step.split("-")
    target = {"temp": "write_temp", "rename": "commit"}[nth]
    real = getattr(engine_store, target)
    calls = []

    def failing(*args):
        calls.append(args)
        if len(calls) == (1 if which == "plan" else 2):
            raise OSError(28, "No space left on device")
        return real(*args)

    monkeypatch.setattr(engine_store, target, failing)
    with pytest.raises(BundleError) as exc:
        add_engine(bundle_copy, b"second" * 100, META)
    assert "cannot save the engine (No space left on device)" in str(exc.value) and "\n" not in str(exc.value)
    monkeypatch.undo()
    after = {f: open(os.path.join(bundle_copy, f), "rb").read() for f in files(bundle_copy)}
    assert after == before  # no temporary file left, the manifest and every plan unchanged
    assert listed(bundle_copy) == {first["file"]: b"first" * 100}
    third = add_engine(bundle_copy, b"third", META)
    assert [f for f in files(bundle_copy) if f.startswith("engines/")] == [third["file"]]


def test_refusals_change_nothing(bundle_copy, tmp_path):
    with pytest.raises(UsageError, match="unpack the archive first"):
        add_engine(str(tmp_path / "nothing.tar.gz"), b"p", META)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    os.symlink(str(elsewhere), os.path.join(bundle_copy, "engines"))
    before = files(bundle_copy)
    with pytest.raises(BundleError, match="engines: not a folder"):
        add_engine(bundle_copy, b"p", META)
    assert files(bundle_copy) == before and os.listdir(str(elsewhere)) == []
    os.remove(os.path.join(bundle_copy, "engines"))
    with open(os.path.join(bundle_copy, "manifest.json"), "r+b") as f:
        f.seek(0)
        f.write(b"{ broken")
    with pytest.raises(BundleError, match="manifest.json.*not valid JSON"):
        add_engine(bundle_copy, b"p", META)
    assert not os.path.exists(os.path.join(bundle_copy, "engines"))


def test_a_file_that_only_looks_like_a_leftover_is_kept(bundle_copy):
    os.makedirs(os.path.join(bundle_copy, "engines"))
    mine = os.path.join(bundle_copy, "engines", "notes-int8-0123456789ab.plan")  # the name pattern, not the content
    with open(mine, "wb") as f:
        f.write(b"the user's own file")
    add_engine(bundle_copy, b"plan", META)
    assert open(mine, "rb").read() == b"the user's own file"


def test_engine_build_refuses_an_archive_before_building(run_cli, tmp_path):
    archive = tmp_path / "bundle.tar.gz"
    archive.write_bytes(b"not unpacked")
    proc = run_cli("engine", "build", str(archive), "--device-profile", "orin-nano")
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert proc.returncode != 0 and len(lines) == 1 and "unpack the archive first" in lines[0], proc.stderr
    assert archive.read_bytes() == b"not unpacked" and sorted(os.listdir(str(tmp_path))) == ["bundle.tar.gz"]
