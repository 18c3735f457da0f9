"""The camera's output files when they cannot be written: a disk that fills up (a real small tmpfs),
a place no file can be made (/proc, even as root), a folder in the way, and what a killed run
left.  Each is one error line and a non-zero exit; nothing half-written is left under a final name."""

import os
import signal
import subprocess
import sys
import time

import pytest

from conftest import one_error_line, run_cli

cv2 = pytest.importorskip("cv2", reason="OpenCV is not installed (pip install 'edgetool[camera]')")
pytest.importorskip("onnxruntime", reason="onnxruntime is not installed (pip install 'edgetool[cpu]')")

from camera_util import records, scenes_video_fixture  # noqa: E402,F401

LOOP = ["--headless", "--input-loop", "4"]  # 3000 frames of 112 x 112


@pytest.mark.parametrize("ext", [".mp4", ".avi"])
def test_a_video_on_a_full_disk_is_an_error_not_a_truncated_file(ext, tiny_bundle, scenes_video, small_disk, tmp_path):
    disk = small_disk(512)
    out = disk / ("out" + ext)
    json_out = tmp_path / "labels.jsonl"
    proc = run_cli("camera", tiny_bundle, scenes_video, out, *LOOP, "--json-out", json_out, timeout=600)
    line = one_error_line(proc)
    assert "No space left on device" in line and str(out) in line, line
    assert os.listdir(disk) == []  # no truncated video under its name, no .partial left
    frames, summary = records(json_out.read_text())  # the labels were written: they say what happened
    assert summary["errors"] >= 1 and summary["stopped"] == "output failed", summary
    assert "errors 0" not in proc.stdout + proc.stderr


def test_json_lines_on_a_full_disk(tiny_bundle, scenes_video, small_disk):
    disk = small_disk(64)
    json_out = disk / "labels.jsonl"
    proc = run_cli("camera", tiny_bundle, scenes_video, *LOOP, "--json-out", json_out, timeout=600)
    line = one_error_line(proc)
    assert "No space left on device" in line and str(json_out) in line, line
    assert os.listdir(disk) == []


@pytest.mark.parametrize("which", ["json", "video"])
def test_an_output_no_file_can_be_made_in_is_refused_before_the_run(which, tiny_bundle, scenes_video):
    args = ["--json-out", "/proc/x.json"] if which == "json" else ["/proc/x.mp4"]
    t0 = time.monotonic()
    proc = run_cli("camera", tiny_bundle, scenes_video, *args, *LOOP, timeout=600)
    line = one_error_line(proc)
    assert "/proc/x." in line and "cannot be written" in line, line
    assert "frames in" not in proc.stdout + proc.stderr  # refused before the loop ran
    assert time.monotonic() - t0 < 60


def test_a_folder_as_the_output_video(tiny_bundle, scenes_video, tmp_path):
    folder = tmp_path / "out.mp4"
    folder.mkdir()
    proc = run_cli("camera", tiny_bundle, scenes_video, folder, "--headless", timeout=600)
    line = one_error_line(proc)
    assert "is a folder" in line, line
    assert os.listdir(tmp_path) == ["out.mp4"] and os.listdir(folder) == []


def test_a_killed_runs_partial_files_are_removed_by_the_next_run(tiny_bundle, scenes_video, tmp_path):
    """SIGKILL leaves the hidden .partial files; the next run writing the same outputs removes
    those whose process is gone, and says so."""
    out, json_out = tmp_path / "out.avi", tmp_path / "labels.jsonl"
    cmd = [sys.executable, "-m", "edgetool", "camera", tiny_bundle, scenes_video, str(out), "--json-out", str(json_out)]
    proc = subprocess.Popen(cmd + LOOP, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while time.time() < deadline and len([f for f in os.listdir(tmp_path) if ".partial-" in f]) < 2:
        time.sleep(0.05)
    time.sleep(1.0)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    left = sorted(f for f in os.listdir(tmp_path) if ".partial-" in f)
    assert len(left) == 2 and not out.exists() and not json_out.exists(), os.listdir(tmp_path)
    proc = run_cli("camera", tiny_bundle, scenes_video, out, "--headless", "--json-out", json_out, timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert sorted(os.listdir(tmp_path)) == ["labels.jsonl", "out.avi"]
    assert all(name in proc.stderr for name in left), proc.stderr  # named as removed
