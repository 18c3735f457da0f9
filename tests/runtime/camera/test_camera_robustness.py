"""edgetool camera robustness: a lost MJPEG-over-HTTP stream and its bounded reconnect, SIGTERM,
bad input, missing OpenCV, and the loop without torch."""

import os
import signal
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest

from conftest import run_cli

cv2 = pytest.importorskip("cv2", reason="OpenCV is not installed (pip install 'edgetool[camera]')")
pytest.importorskip("onnxruntime", reason="onnxruntime is not installed (pip install 'edgetool[cpu]')")

from camera_util import (  # noqa: E402,F401
    HOLD,
    SCENES,
    SIZE,
    image_folder_fixture,
    records,
    scene_images,
    scenes_video_fixture,
    video_frames,
)


class MJPEG(BaseHTTPRequestHandler):
    """multipart/x-mixed-replace JPEG stream: the first `live` connections get `frames` frames each, then
    the connection drops; later connections are refused with 503 (the camera is gone)."""

    jpegs, live, frames, seen = [], 2, 20, []

    def do_GET(self):
        type(self).seen.append(time.monotonic())
        if len(self.seen) > self.live:
            self.send_error(503)
            return
        self.send_response(200)
        self.send_header("Content-Type", "multipart/x-mixed-replace; boundary=frame")
        self.end_headers()
        for i in range(self.frames):
            j = self.jpegs[i * len(self.jpegs) // self.frames]
            head = b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: %d\r\n\r\n" % len(j)
            self.wfile.write(head + j + b"\r\n")
            self.wfile.flush()

    def log_message(self, *args):
        pass


def test_lost_stream_bounded_reconnect(tiny_bundle):
    MJPEG.jpegs = [cv2.imencode(".jpg", cv2.resize(img, (SIZE, SIZE)))[1].tobytes() for img in scene_images()[:2]]
    MJPEG.seen = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), MJPEG)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = "http://127.0.0.1:{}/cam.mjpg".format(server.server_address[1])
    try:
        proc = run_cli(
            "camera",
            tiny_bundle,
            url,
            "--headless",
            "--json",
            "--reconnect",
            "3",
            "--reconnect-delay",
            "0.1",
            timeout=300,
        )
    finally:
        server.shutdown()
        server.server_close()
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines()[-1] == "error: stream {} lost; 3 reconnect attempts failed".format(url)
    assert "Traceback" not in proc.stderr
    frames, summary = records(proc.stdout)
    assert summary["frames"] == len(frames) == 2 * MJPEG.frames
    assert summary["stopped"] == "source lost" and summary["reconnects"] == 1 and summary["failed_reconnects"] == 3
    # bounded: one first connection, one successful reconnect, then exactly 3 attempts, with growing backoff
    assert len(MJPEG.seen) == 5
    gaps = np.diff(MJPEG.seen[2:])
    assert gaps[0] >= 0.15 and gaps[1] >= 0.35, gaps


def test_sigterm_stops_cleanly_with_summary(tiny_bundle, scenes_video, tmp_path):
    out_video = tmp_path / "out.avi"
    cmd = [
        sys.executable,
        "-m",
        "edgetool",
        "camera",
        tiny_bundle,
        scenes_video,
        str(out_video),
        "--headless",
        "--json",
        "--input-rate",
        "40",
    ]
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=dict(os.environ, EDGETOOL_THREADS="2")
    )
    lines = []
    for line in proc.stdout:
        lines.append(line)
        if len(lines) == 20:
            proc.send_signal(signal.SIGTERM)
            break
    rest, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + 15, err  # terminated, after its summary
    assert err.rstrip().endswith("terminated by SIGTERM") and "Traceback" not in err
    frames, summary = records("".join(lines) + rest)
    assert summary["stopped"] == "SIGTERM"
    assert 20 <= summary["frames"] == len(frames) < SCENES * HOLD
    assert summary["fps"] > 0 and "switches" in summary and "dropped_frames" in summary and "errors" in summary
    assert "FPS" in err and "stopped: SIGTERM" in err
    assert video_frames(str(out_video)) == summary["frames"]
    assert sorted(os.listdir(tmp_path)) == ["out.avi"]


@pytest.mark.parametrize(
    "args, message",
    [
        (["rtp://10.0.0.1:5000"], "unsupported input"),
        (["/no/such/clip.mp4"], "no such video file, image or folder"),
        (["VIDEO", "out.xyz"], "unsupported output"),
        (["VIDEO", "--leave", "2"], "--leave must be in [0, 1] and --enter >= 0"),
        (["BROKEN"], "cannot open video file"),
        (["VIDEO"], "pass --headless"),
    ],
)
def test_bad_input_one_error_line(tiny_bundle, scenes_video, tmp_path, args, message):
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(os.urandom(4096))
    args = [{"VIDEO": scenes_video, "BROKEN": str(broken)}.get(a, a) for a in args]
    if "--leave" in args or "BROKEN" in args or "out.xyz" in args:
        args.append("--headless")
    proc = run_cli("camera", tiny_bundle, *args, env={"DISPLAY": "", "WAYLAND_DISPLAY": ""}, timeout=120)
    assert proc.returncode != 0
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], proc.stderr


def test_csi_needs_gstreamer(tiny_bundle):
    from edgetool.runtime.camera.sources import build_flag, csi_pipeline

    assert csi_pipeline(0, 1280, 720, 30).startswith("nvarguscamerasrc sensor-id=0 ! video/x-raw(memory:NVMM)")
    if build_flag(cv2, "GStreamer"):
        pytest.skip("this OpenCV has GStreamer; the CSI error path cannot be shown here")
    proc = run_cli("camera", tiny_bundle, "csi://0", "--headless")
    assert proc.stderr.strip() == (
        "error: csi://0 needs OpenCV built with GStreamer (JetPack's python3-opencv); this OpenCV has none"
    )


def test_camera_runs_without_torch(tiny_bundle, image_folder):
    block = (
        "import sys\nclass B:\n    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in ('torch', 'torchvision'):\n"
        "            raise ModuleNotFoundError('blocked: ' + name, name=name)\n"
        "sys.meta_path.insert(0, B())\nfrom edgetool.cli import main\nmain(sys.argv[1:])\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", block, "camera", tiny_bundle, str(image_folder), "--headless", "--json"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert records(proc.stdout)[1]["frames"] == SCENES


def test_missing_opencv_names_the_extra(tmp_path):
    block = (
        "import sys\nclass B:\n    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] == 'cv2':\n"
        "            raise ModuleNotFoundError('blocked: ' + name, name=name)\n"
        "sys.meta_path.insert(0, B())\nfrom edgetool.cli import main\nmain(sys.argv[1:])\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", block, "camera", str(tmp_path), str(tmp_path), "--headless"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines() == [
        "error: cv2 (OpenCV) is not installed; install it with: pip install 'edgetool[camera]'"
    ]
