"""Shared by the camera tests: scenes from the shipped sample, a real video, an image folder,
and readers for the loop's JSON lines and output videos."""

import json
import time

import cv2
import pytest

SCENES, HOLD, SIZE = 10, 60, 112
STAGES = {"capture", "preprocess", "infer", "switch", "classify", "render"}


def scene_images():
    """One shipped sample image per Fashion-MNIST class (28x28 grey)."""
    from edgetool.toolchain.data.folders import load_sample

    test = load_sample("test")
    first = {}
    for i, y in enumerate(test.labels):
        first.setdefault(int(y), i)
    return [test.images[first[c], :, :, 0] for c in sorted(first)][:SCENES]


@pytest.fixture(scope="module", name="scenes_video")
def scenes_video_fixture(tmp_path_factory):
    """A real MJPG video: each sample scene held for HOLD frames, scaled up to SIZE x SIZE."""
    path = str(tmp_path_factory.mktemp("video") / "scenes.avi")
    w = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*"MJPG"), 30, (SIZE, SIZE))
    assert w.isOpened()
    for img in scene_images():
        frame = cv2.cvtColor(cv2.resize(img, (SIZE, SIZE), interpolation=cv2.INTER_NEAREST), cv2.COLOR_GRAY2BGR)
        for _ in range(HOLD):
            w.write(frame)
    w.release()
    return path


@pytest.fixture(name="image_folder")
def image_folder_fixture(tmp_path):
    d = tmp_path / "frames"
    d.mkdir()
    for n, img in enumerate(scene_images()):
        assert cv2.imwrite(str(d / "f{:03d}.png".format(n)), img)
    (d / "f004b.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")  # corrupt: skipped and counted
    return d


def records(text):
    rows = [json.loads(line) for line in text.splitlines() if line.strip()]
    frames = [r for r in rows if r["type"] == "frame"]
    summary = [r for r in rows if r["type"] == "summary"]
    assert len(summary) == 1 and rows[-1] is summary[0]
    return frames, summary[0]


def video_frames(path, first=None):
    cap = cv2.VideoCapture(path)
    n = 0
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        if n == 0 and first is not None:
            first.append(frame)
        n += 1
    cap.release()
    return n


def check_frame_records(frames, n):
    assert [r["frame"] for r in frames] == list(range(n))
    times = [r["time"] for r in frames]
    assert times == sorted(times) and abs(times[0] - time.time()) < 3600
    for r in frames:
        assert set(r["timings_ms"]) == STAGES and all(v >= 0 for v in r["timings_ms"].values())
        assert r["network"] == ("base" if r["class"] is None else "subclass:" + r["superclass"])
        assert 0 < r["confidence"] <= 1


class Collect:
    """A JSON-lines sink that keeps the records in memory."""

    def __init__(self):
        self.rows = []

    def write(self, r):
        self.rows.append(r)


def run_loop(bundle, video, **kw):
    """The camera loop in this process on *video*; returns (summary, frame records)."""
    from edgetool.runtime.backends import load_backend
    from edgetool.runtime.camera.loop import CameraLoop
    from edgetool.runtime.camera.schedule import StreamClassifier
    from edgetool.runtime.camera.sources import Options, ReconnectingSource, open_source

    src = ReconnectingSource(open_source(video, Options()))
    src.open()
    with load_backend("onnxruntime", bundle) as be:
        clf = StreamClassifier(be, **kw.pop("clf"))
        loop = CameraLoop(src, clf, bundle.input, json_out=Collect(), **kw)
        clf.on_error = loop.error
        return loop.run(), loop.json_out.rows
