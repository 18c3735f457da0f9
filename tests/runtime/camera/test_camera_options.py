"""jetson-inference's video options on `edgetool camera`, on real OpenCV-written videos: output size
(never scaled up unasked), codec, bitrate, input flip and loop; rtp:// and rtsp:// outputs."""

import os

import numpy as np
import pytest

from conftest import run_cli

cv2 = pytest.importorskip("cv2", reason="OpenCV is not installed (pip install 'edgetool[camera]')")
pytest.importorskip("onnxruntime", reason="onnxruntime is not installed (pip install 'edgetool[cpu]')")
from camera_util import image_folder_fixture, records, video_frames  # noqa: E402,F401

W, H, N = 96, 64, 12


@pytest.fixture(scope="module")
def asymmetric_video(tmp_path_factory):
    """N frames of one left-right asymmetric picture (bright left half, a dark right half with noise)."""
    rng = np.random.default_rng(0)
    frame = np.zeros((H, W, 3), np.uint8)
    frame[:, : W // 2] = 220
    frame[:, W // 2 :] = rng.integers(0, 60, (H, W - W // 2, 3))
    path = str(tmp_path_factory.mktemp("video") / "asym.avi")
    w = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*"MJPG"), 30, (W, H))
    for _ in range(N):
        w.write(frame)
    w.release()
    return path, frame


def camera(bundle, video, *args):
    proc = run_cli("camera", bundle, video, *[str(a) for a in args], "--headless", "--policy", "per-image")
    assert proc.returncode == 0, proc.stderr
    return proc


def first_frame(path):
    got = []
    assert video_frames(str(path), got) > 0
    return got[0]


def fourcc(path):
    cap = cv2.VideoCapture(str(path))
    code = int(cap.get(cv2.CAP_PROP_FOURCC))
    cap.release()
    return "".join(chr((code >> 8 * i) & 0xFF) for i in range(4))


def test_output_is_the_input_size_unless_asked(tiny_bundle, asymmetric_video, tmp_path):
    video, _ = asymmetric_video
    camera(tiny_bundle, video, tmp_path / "same.avi")
    assert first_frame(tmp_path / "same.avi").shape[:2] == (H, W)  # a small input is not scaled up
    camera(tiny_bundle, video, tmp_path / "big.avi", "--output-width", 200, "--output-height", 150)
    assert first_frame(tmp_path / "big.avi").shape[:2] == (150, 200)


def test_codec_and_bitrate(tiny_bundle, asymmetric_video, tmp_path):
    video, _ = asymmetric_video
    camera(tiny_bundle, video, tmp_path / "m.mkv", "--output-codec", "mjpeg")
    assert fourcc(tmp_path / "m.mkv") == "MJPG"  # .mkv would be XVID by default
    camera(tiny_bundle, video, tmp_path / "x.mkv")
    assert fourcc(tmp_path / "x.mkv") in ("XVID", "FMP4")  # the container's default (MPEG-4 part 2)
    noisy = str(tmp_path / "noise.avi")  # every frame new noise: the bitrate decides the size
    w = cv2.VideoWriter(noisy, cv2.VideoWriter_fourcc(*"MJPG"), 30, (W, H))
    rng = np.random.default_rng(1)
    for _ in range(N):
        w.write(rng.integers(0, 256, (H, W, 3), dtype=np.uint8))
    w.release()
    sizes = {}
    for rate in (50_000, 3_000_000):
        out = tmp_path / "r{}.mp4".format(rate)
        camera(tiny_bundle, noisy, out, "--bitrate", rate)
        sizes[rate] = os.path.getsize(out)
    assert sizes[3_000_000] > 1.5 * sizes[50_000], sizes


def test_input_flip_turns_what_is_classified_and_written(tiny_bundle, asymmetric_video, tmp_path):
    video, frame = asymmetric_video
    camera(tiny_bundle, video, tmp_path / "plain.avi")
    camera(tiny_bundle, video, tmp_path / "flip.avi", "--input-flip", "horizontal")
    camera(tiny_bundle, video, tmp_path / "turn.avi", "--input-flip", "clockwise")
    plain, flip = first_frame(tmp_path / "plain.avi"), first_frame(tmp_path / "flip.avi")
    rows = slice(H // 2, H)  # below the overlay band
    assert plain[rows, : W // 4].mean() > 150 > 100 > plain[rows, -W // 4 :].mean()
    assert flip[rows, -W // 4 :].mean() > 150 > 100 > flip[rows, : W // 4].mean()
    assert first_frame(tmp_path / "turn.avi").shape[:2] == (W, H)  # a quarter turn swaps the sides


def test_input_loop_replays_a_video(tiny_bundle, asymmetric_video):
    video, _ = asymmetric_video
    frames, summary = records(camera(tiny_bundle, video, "--json", "--input-loop", 1).stdout)
    assert summary["frames"] == 2 * N and summary["stopped"] == "end of stream"


def test_input_loop_replays_a_folder(tiny_bundle, image_folder):
    proc = camera(tiny_bundle, image_folder, "--json", "--input-loop", 2)
    frames, summary = records(proc.stdout)
    assert summary["frames"] == 30 and summary["dropped_frames"] == 3  # 10 good + 1 corrupt, played 3 times
    assert [r["image"] for r in frames[:10]] == [r["image"] for r in frames[10:20]] == [r["image"] for r in frames[20:]]
    proc = camera(tiny_bundle, image_folder, "--json", "--input-loop", -1, "--max-frames", 25)
    assert records(proc.stdout)[1]["frames"] == 25


def test_bad_output_settings_are_one_error_line(tiny_bundle, asymmetric_video, tmp_path):
    video, _ = asymmetric_video
    gst = "GStreamer" in cv2.getBuildInformation() and "YES" in cv2.getBuildInformation().split("GStreamer:")[1][:20]
    cases = [
        ([tmp_path / "o.avi", "--output-width", 100], "--output-width and --output-height go together"),
        ([tmp_path / "o.avi", "--bitrate", -1], "must be >= 0"),
        ([tmp_path / "o.avi", "--input-loop", -2], "--input-loop >= -1"),
        (["--output-codec", "mjpeg"], "set a video OUTPUT; give one"),
        (["rtsp://0.0.0.0:8554/live"], "needs an RTSP server"),
        (["rtp://127.0.0.1:5004", "--output-codec", "vp9"], "rtp:// output is H.264"),
        ([tmp_path / "o.avi", "--input-flip", "sideways"], "Invalid value for '--input-flip'"),
    ]
    if not gst:
        cases.append((["rtp://127.0.0.1:5004"], "rtp:// output needs OpenCV built with GStreamer"))
    for args, message in cases:
        proc = run_cli("camera", tiny_bundle, video, *[str(a) for a in args], "--headless")
        assert proc.returncode != 0 and message in proc.stderr, (args, proc.stderr)
        assert "Traceback" not in proc.stderr
    assert not (tmp_path / "o.avi").exists()


def test_rtp_output_through_gstreamer(tiny_bundle, asymmetric_video):
    info = cv2.getBuildInformation()
    if "GStreamer" not in info or "YES" not in info.split("GStreamer:")[1][:20]:
        pytest.skip("this OpenCV has no GStreamer (opencv-python-headless); JetPack's python3-opencv has it")
    video, _ = asymmetric_video
    proc = camera(tiny_bundle, video, "rtp://127.0.0.1:5004")
    assert "{} frames".format(N) in proc.stdout
