"""The scripts in examples/ run as a user would run them, on a real bundle, folder and video."""

import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXAMPLES = os.path.join(ROOT, "examples")

pytest.importorskip("onnxruntime")


def run(script, *args):
    proc = subprocess.run(
        [sys.executable, os.path.join(EXAMPLES, script)] + [str(a) for a in args],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.splitlines()


@pytest.fixture(scope="module")
def sample_images(tmp_path_factory, tiny_bundle):
    """Ten shipped test images as PNGs, one per class, with their class names (one in a sub-folder)."""
    from PIL import Image

    from edgetool.toolchain.data.folders import load_sample

    test = load_sample("test")
    d = tmp_path_factory.mktemp("images")
    (d / "more").mkdir()
    names = {}
    for c in range(10):
        i = int(list(test.labels).index(c))
        rel = "more/img{}.png".format(c) if c == 9 else "img{}.png".format(c)
        Image.fromarray(test.images[i, :, :, 0]).save(str(d / rel))
        names[rel] = test.classes[c]
    return d, names


def test_classify_folder_prints_each_image_in_classify_order(tiny_bundle, sample_images):
    folder, names = sample_images
    lines = run("classify_folder.py", tiny_bundle, folder)
    rows = [line.split("\t") for line in lines[:-1]]
    assert [r[0] for r in rows] == ["img{}.png".format(c) for c in range(9)] + ["more/img9.png"]
    assert sum(r[1] == names[r[0]] for r in rows) >= 5  # the tiny run is better than chance (10%)
    assert all(0.0 < float(r[3]) <= 1.0 for r in rows)
    assert lines[-1].startswith("subclass networks per image: 1.00")


def test_camera_loop_on_a_real_video(tiny_bundle, tmp_path):
    cv2 = pytest.importorskip("cv2")
    from edgetool.toolchain.data.folders import load_sample

    test = load_sample("test")
    path = str(tmp_path / "scene.avi")
    w = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*"MJPG"), 30, (56, 56))
    for c in (0, 7):  # two scenes of 20 frames each
        frame = cv2.cvtColor(cv2.resize(test.images[list(test.labels).index(c), :, :, 0], (56, 56)), cv2.COLOR_GRAY2BGR)
        for _ in range(20):
            w.write(frame)
    w.release()
    lines = run("camera_loop.py", tiny_bundle, path, 30)
    assert len(lines) == 30 and lines[-1].startswith("frame 30\t")
    switches = [int(line.rsplit(" ", 1)[1]) for line in lines]
    assert switches == sorted(switches) and switches[-1] <= 8  # sticky: far fewer switches than frames


def test_time_switch_one_line_per_subclass_network(tiny_bundle):
    from edgetool.runtime.bundle.reader import Bundle

    b = Bundle.open(str(tiny_bundle))
    lines = run("time_switch.py", tiny_bundle, 3)
    assert [line.split("\t")[0] for line in lines] == [s.name for s in b.superclasses]
    for line, d in zip(lines, b.model.deltas):
        ms = float(line.split("\t")[1].split()[0])
        assert 0 < ms < 1000 and "{} bytes ({})".format(d.size, d.codec) in line
