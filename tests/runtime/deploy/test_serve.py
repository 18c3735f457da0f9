"""`edgetool serve ROOT`: the camera loop follows the deploy root's deploys and rollbacks between
frames; a version that fails to load leaves the old one serving; status shows what is served;
`target service` writes a systemd unit."""

import os
import shutil
import signal
import subprocess
import sys
import time

import pytest

from conftest import run_cli
from deploy_fixtures import deploy_kit_fixture, version_of  # noqa: F401  (fixture)
from serve_util import Served, make_video
from update_fixtures import update_kit_fixture  # noqa: F401  (fixture)

cv2 = pytest.importorskip("cv2", reason="OpenCV is not installed (pip install 'edgetool[camera]')")
pytest.importorskip("onnxruntime")


def local_deploy(bundle, root):
    proc = run_cli("deploy", bundle, "--to", root, "--device-profile", "cpu")
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr
    return proc


@pytest.fixture()
def video(tmp_path):
    return make_video(str(tmp_path / "scene.avi"))


def test_serve_follows_deploys_and_rollbacks_between_frames(deploy_kit, tmp_path, video):
    root = tmp_path / "root"
    assert run_cli("target", "trust", root, deploy_kit["keys"]["good"]["public"]).returncode == 0
    local_deploy(deploy_kit["v1"], root)
    v1, v2 = version_of(deploy_kit["v1"]), version_of(deploy_kit["v2"])
    served = Served(root, video)
    try:
        served.wait_for(v1)
        status = run_cli("status", "--to", root)
        assert "serving   {} (edgetool serve, pid {}".format(v1, served.proc.pid) in status.stdout, status.stdout
        local_deploy(deploy_kit["v2"], root)
        served.wait_for(v2)
        # a version that cannot be loaded (an empty folder): logged once, v2 keeps serving
        bogus = root / "versions" / "bogus"
        bogus.mkdir()
        os.symlink("versions/bogus", str(root / "current.new"))
        os.replace(str(root / "current.new"), str(root / "current"))
        served.wait_for(v2, frames=20)
        os.symlink("versions/" + v2, str(root / "current.new"))
        os.replace(str(root / "current.new"), str(root / "current"))
        shutil.rmtree(str(bogus))
        assert run_cli("rollback", "--to", root).returncode == 0
        served.wait_for(v1)
    finally:
        rc = served.stop()
    assert rc == 143, "\n".join(served.err)
    frames = [r for r in served.rows if r["type"] == "frame"]
    summary = served.rows[-1]
    assert summary["type"] == "summary" and summary["frames"] == len(frames) and summary["dropped_frames"] == 0
    assert [r["frame"] for r in frames] == list(range(len(frames)))  # every frame classified, none lost
    runs = [frames[0]["version"]] + [b["version"] for a, b in zip(frames, frames[1:]) if a["version"] != b["version"]]
    assert runs == [v1, v2, v1]  # whole frames on one version each: the swaps fall between frames
    warned = [e for e in served.err if "cannot serve bogus" in e]
    assert len(warned) == 1 and "still serving {}".format(v2) in warned[0]
    assert any("serving {} (was {})".format(v2, v1) in e for e in served.err)
    assert not (root / "serving.json").exists()  # removed when the loop ends
    assert "serving   nothing" in run_cli("status", "--to", root).stdout


def test_serve_picks_up_an_update_between_frames(update_kit, tmp_path, video):
    """An update bundle installs a whole version like a full bundle does: serve takes it over between frames."""
    from test_update import version_of_update

    root = tmp_path / "root"
    assert run_cli("target", "trust", root, update_kit["keys"]["good"]["public"]).returncode == 0
    local_deploy(update_kit["v1"], root)
    v1, v2 = version_of(update_kit["v1"]), version_of_update(update_kit["u2"])
    served = Served(root, video)
    try:
        served.wait_for(v1)
        local_deploy(update_kit["u2"], root)
        served.wait_for(v2)
    finally:
        rc = served.stop()
    assert rc == 143, "\n".join(served.err)
    frames = [r for r in served.rows if r["type"] == "frame"]
    assert [r["frame"] for r in frames] == list(range(len(frames)))
    runs = [frames[0]["version"]] + [b["version"] for a, b in zip(frames, frames[1:]) if a["version"] != b["version"]]
    assert runs == [v1, v2]


def test_serve_refuses_an_empty_root(tmp_path, video):
    proc = run_cli("serve", tmp_path, video, "--headless")
    assert proc.returncode != 0 and "no version installed" in proc.stderr and proc.stderr.count("\n") == 1


def test_target_service_writes_a_unit_systemd_accepts(tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    unit = tmp_path / "edgetool-serve.service"
    args = [
        "target",
        "service",
        root,
        "/dev/video0",
        "out.mp4",
        "--out",
        unit,
        "--serve-args",
        "--headless --json-out '/var/log/edge labels.jsonl'",
    ]
    proc = run_cli(*args)
    assert proc.returncode == 0, proc.stderr
    text = unit.read_text()
    exec_start = [line for line in text.splitlines() if line.startswith("ExecStart=")]
    out = os.path.abspath("out.mp4")  # a relative OUTPUT, made absolute (run_cli runs in this directory)
    serve = 'serve {} /dev/video0 {} --headless --json-out "/var/log/edge labels.jsonl"'.format(root, out)
    assert exec_start == ["ExecStart={} -I -m edgetool {}".format(sys.executable, serve)]
    assert "WorkingDirectory={}".format(os.getcwd()) in text.splitlines()
    assert "Restart=on-failure" in text and "WantedBy=multi-user.target" in text
    assert "sudo systemctl enable --now edgetool-serve.service" in proc.stdout
    bad = run_cli("target", "service", tmp_path / "nope", "--out", tmp_path / "x.service")
    assert bad.returncode != 0 and "no such deploy root" in bad.stderr and not (tmp_path / "x.service").exists()
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed here; the unit's text was checked")
    ok = subprocess.run([analyze, "verify", str(unit)], capture_output=True, text=True)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    broken = tmp_path / "broken.service"
    broken.write_text(text.replace("ExecStart=/", "ExecStart="))  # a relative path: systemd refuses it
    assert subprocess.run([analyze, "verify", str(broken)], capture_output=True).returncode != 0


def test_target_service_writes_local_paths_absolute_and_runs_where_it_was_written(tmp_path):
    """A relative INPUT or OUTPUT would be read from / (systemd's default directory): they are written
    absolute, camera URIs as given, and the unit's WorkingDirectory is where the command ran, for the
    relative paths left in --serve-args."""
    from edgetool.runtime.errors import UsageError
    from edgetool.runtime.target.service import local_path, unit_text

    here = str(tmp_path / "site")
    for given, want in (
        ("frames", os.path.abspath("frames")),
        ("file://clip.mp4", "file://" + os.path.abspath("clip.mp4")),
        ("/dev/video0", "/dev/video0"),
        ("csi://0", "csi://0"),
        ("v4l2:///dev/video1", "v4l2:///dev/video1"),
        ("rtp://10.0.0.2:5000", "rtp://10.0.0.2:5000"),
    ):
        assert local_path(given) == want
    text = unit_text("root", "frames", "out.mp4", ["--json-out", "labels.jsonl"], "edge", workdir=here)
    lines = text.splitlines()
    assert "WorkingDirectory=" + here in lines
    argv = systemd_argv(next(ln for ln in lines if ln.startswith("ExecStart="))[len("ExecStart=") :])
    assert argv[5:] == [os.path.abspath(p) for p in ("root", "frames", "out.mp4")] + ["--json-out", "labels.jsonl"]
    assert "WorkingDirectory=/a/100%%" in unit_text("/r", "csi://0", None, [], "edge", workdir="/a/100%").splitlines()
    for bad in ("/a\nExecStartPre=/bin/true", "/a/b "):
        with pytest.raises(UsageError, match="working directory"):
            unit_text("/r", "csi://0", None, [], "edge", workdir=bad)


def systemd_argv(line):
    """The argv systemd makes of an ExecStart= value (systemd.service "Command lines": words split at
    blanks, double quotes with backslash escapes, %% and $$ for a literal % and $)."""
    words, i = [], 0
    while i < len(line):
        if line[i] == " ":
            i += 1
            continue
        word = ""
        if line[i] == '"':
            i += 1
            while line[i] != '"':
                if line[i] == "\\":
                    i += 1
                word += line[i]
                i += 1
            i += 1
        else:
            while i < len(line) and line[i] != " ":
                word += line[i]
                i += 1
        words.append(word.replace("%%", "%").replace("$$", "$"))
    return words


def test_target_service_escapes_what_systemd_would_expand_and_refuses_newlines(tmp_path):
    root = tmp_path / "r%z $HOME \"q\" 's' \\ ;"
    root.mkdir()
    unit = tmp_path / "u.service"
    proc = run_cli("target", "service", root, "rtsp://h/p%41", "--out", unit, "--serve-args", "--json-out 'a $b%c'")
    assert proc.returncode == 0, proc.stderr
    text = unit.read_text()
    exec_start = [ln[len("ExecStart=") :] for ln in text.splitlines() if ln.startswith("ExecStart=")]
    assert len(exec_start) == 1
    argv = systemd_argv(exec_start[0])
    assert argv == [sys.executable, "-I", "-m", "edgetool", "serve", str(root), "rtsp://h/p%41", "--json-out", "a $b%c"]
    analyze = shutil.which("systemd-analyze")
    if analyze:
        ok = subprocess.run([analyze, "verify", str(unit)], capture_output=True, text=True)
        assert ok.returncode == 0, ok.stdout + ok.stderr  # a bare %z is "Invalid slot" to systemd
    marker = tmp_path / "pwned"
    for evil, args in (
        (tmp_path / "x\nExecStartPre=/bin/touch {}".format(marker), []),
        (root, ["--serve-args", "--json-out 'a\nExecStartPre=/bin/touch {}'".format(marker)]),
        (root, ["--user", "root\nExecStartPre=/bin/touch"]),
    ):
        evil.mkdir(parents=True, exist_ok=True)
        bad = tmp_path / "bad.service"
        proc = run_cli("target", "service", evil, "--out", bad, *args)
        assert proc.returncode != 0 and "Traceback" not in proc.stderr, proc.stderr
        assert proc.stderr.startswith("error: ") and proc.stderr.count("\n") == 1, proc.stderr
        assert not bad.exists()


def test_a_killed_serves_partial_output_is_removed_and_a_stopped_exports_temp_is_named(deploy_kit, tmp_path, video):
    """SIGKILL leaves `serve`'s hidden .partial JSON lines: the next serve writing them removes
    those whose process is gone and says so; `inspect` names what a stopped export left."""
    root = tmp_path / "root"
    assert run_cli("target", "trust", root, deploy_kit["keys"]["good"]["public"]).returncode == 0
    local_deploy(deploy_kit["v1"], root)
    labels = tmp_path / "labels.jsonl"
    cmd = [sys.executable, "-m", "edgetool", "serve", str(root), video, "--headless", "--json-out", str(labels)]
    proc = subprocess.Popen(cmd + ["--input-loop", "-1"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    partial = tmp_path / ".labels.partial-{}.jsonl".format(proc.pid)
    deadline = time.time() + 120
    while time.time() < deadline and not (partial.exists() and partial.stat().st_size > 0):
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert partial.exists() and not labels.exists()
    done = run_cli("serve", root, video, "--headless", "--json-out", labels, "--max-frames", "5")
    assert done.returncode == 0, done.stderr
    assert "removed {}".format(partial) in done.stderr and not partial.exists()
    assert len(labels.read_text().splitlines()) == 6  # five frames and the summary
    bundle = tmp_path / "b"
    shutil.copytree(deploy_kit["v1"], str(bundle))
    left = tmp_path / ".b.tmp-{}-x1y2".format(proc.pid)  # an export killed the same way
    left.mkdir()
    out = run_cli("inspect", bundle).stdout
    assert "leftover    {} (left by a stopped export, pid {}".format(left, proc.pid) in out, out
