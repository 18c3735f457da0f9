"""edgetool camera: a real video file and an image folder, run headless end to end with the
ONNX Runtime backend on a real bundle; stream scheduling, smoothing, a failing delta."""

import json
import os

import numpy as np
import pytest

from conftest import run_cli

cv2 = pytest.importorskip("cv2", reason="OpenCV is not installed (pip install 'edgetool[camera]')")
pytest.importorskip("onnxruntime", reason="onnxruntime is not installed (pip install 'edgetool[cpu]')")

from camera_util import (  # noqa: E402,F401
    HOLD,
    SCENES,
    SIZE,
    check_frame_records,
    image_folder_fixture,
    records,
    run_loop,
    scenes_video_fixture,
    video_frames,
)


def test_video_sticky_vs_per_frame_routing(tiny_bundle, scenes_video, tmp_path):
    out_video, out_json = tmp_path / "out.mp4", tmp_path / "sticky.jsonl"
    proc = run_cli(
        "camera",
        tiny_bundle,
        scenes_video,
        out_video,
        "--headless",
        "--json-out",
        out_json,
        "--policy",
        "sticky",
        "--interval",
        "30",
        "--output-width",
        3 * SIZE,
        "--output-height",
        3 * SIZE,
    )
    assert proc.returncode == 0, proc.stderr
    assert "600 frames" in proc.stdout and "switches" in proc.stdout
    assert "\npolicy sticky enter=0.6 leave=0.4 interval=30" in proc.stdout  # words, not "policy policy=sticky"
    sticky, s_sum = records(out_json.read_text())
    check_frame_records(sticky, SCENES * HOLD)
    assert s_sum["frames"] == SCENES * HOLD and s_sum["dropped_frames"] == 0 and s_sum["errors"] == 0
    assert s_sum["settings"]["policy"] == "sticky" and s_sum["settings"]["interval"] == 30
    assert s_sum["scene_cuts"] == SCENES - 1 and s_sum["stopped"] == "end of stream"
    first = []
    assert video_frames(str(out_video), first) == SCENES * HOLD
    # the overlay at the size asked for: a dark band with white text on top
    band = first[0][:40].astype(int)
    assert first[0].shape[:2] == (3 * SIZE, 3 * SIZE) and band.mean() < 60 and (band > 200).mean() > 0.01
    assert sorted(os.listdir(tmp_path)) == ["out.mp4", "sticky.jsonl"]  # no temporary file left

    proc = run_cli("camera", tiny_bundle, scenes_video, "--headless", "--json", "--policy", "per-image")
    assert proc.returncode == 0, proc.stderr
    per_frame, p_sum = records(proc.stdout)
    check_frame_records(per_frame, SCENES * HOLD)
    assert p_sum["switches"] >= 10 * s_sum["switches"] > 0, (p_sum["switches"], s_sum["switches"])
    same = np.mean([a["class"] == b["class"] for a, b in zip(sticky, per_frame)])
    assert same >= 0.99, same
    assert p_sum["superclass_changes"] == s_sum["superclass_changes"]


def test_image_folder_matches_classify(tiny_bundle, image_folder):
    """The same folder, sub-folders included, in the same order, with the same record fields."""
    (image_folder / "sub").mkdir()
    for name in ("f001.png", "f007.png"):
        (image_folder / name).rename(image_folder / "sub" / name)
    proc = run_cli("camera", tiny_bundle, image_folder, "--headless", "--json", "--policy", "per-image", "--batch", "4")
    assert proc.returncode == 0, proc.stderr
    frames, summary = records(proc.stdout)
    check_frame_records(frames, SCENES)
    assert summary["dropped_frames"] == 1 and summary["frames"] == SCENES
    assert all(r["batch"] in (4, 2) for r in frames)
    ref = run_cli("classify", tiny_bundle, image_folder, "--json", "--policy", "per-image", "--skip-errors")
    assert ref.returncode == 0, ref.stderr
    expected = [json.loads(line) for line in ref.stdout.splitlines()]
    assert [r["image"] for r in frames] == [e["image"] for e in expected]
    assert [os.path.relpath(e["image"], image_folder) for e in expected][-2:] == ["sub/f001.png", "sub/f007.png"]
    for r, e in zip(frames, expected):
        assert {k: r[k] for k in e if k != "confidence"} == {k: e[k] for k in e if k != "confidence"}
        assert abs(r["confidence"] - e["confidence"]) < 1e-5


def test_batching_and_smoothing_keep_labels(tiny_bundle, scenes_video):
    from edgetool.runtime.bundle.reader import Bundle
    from edgetool.runtime.camera.schedule import SceneCut, Smoother

    b = Bundle.open(tiny_bundle)
    labels = {}
    for batch, smoothing in ((1, 0.0), (8, 0.0), (1, 4.0)):
        s, rows = run_loop(
            b,
            scenes_video,
            clf=dict(policy="sticky"),
            batch=batch,
            cut=SceneCut(),
            smoother=Smoother(b, smoothing) if smoothing else None,
        )
        assert s["frames"] == SCENES * HOLD and s["settings"]["batch"] == batch
        labels[batch, smoothing] = [r["class"] for r in rows]
    assert labels[8, 0.0] == labels[1, 0.0]
    # held scenes, a reset at each cut: smoothing changes nothing on steady frames
    assert np.mean([a == c for a, c in zip(labels[1, 0.0], labels[1, 4.0])]) >= 0.99


def test_sticky_hysteresis_and_scene_cuts(tiny_bundle, scenes_video):
    from edgetool.runtime.bundle.reader import Bundle
    from edgetool.runtime.camera.schedule import SceneCut

    b = Bundle.open(tiny_bundle)
    ref, _ = run_loop(b, scenes_video, clf=dict(policy="superclass"), cut=SceneCut(0))  # routing on every frame
    assert ref["superclass_changes"] > 0
    # enter > 1: a superclass pass never moves to another superclass, and no cut resets it
    s, rows = run_loop(b, scenes_video, clf=dict(policy="sticky", enter=2.0, leave=0.0, interval=30), cut=SceneCut(0))
    assert s["superclass_changes"] == 0 and s["superclass_passes"] == SCENES * HOLD // 30
    assert {r["network"] for r in rows} == {rows[0]["network"]}
    # the same, with scene cuts: every cut takes a fresh superclass pass, so the changes come back
    s, rows = run_loop(
        b, scenes_video, clf=dict(policy="sticky", enter=2.0, leave=0.0, interval=30), cut=SceneCut(0.08)
    )
    assert s["scene_cuts"] == SCENES - 1 and s["superclass_changes"] == ref["superclass_changes"]
    assert [r["frame"] for r in rows if r["scene_cut"]] == [HOLD * i for i in range(1, SCENES)]


def test_smoother_suppresses_flicker(tiny_bundle):
    from edgetool.runtime.bundle.reader import Bundle
    from edgetool.runtime.camera.schedule import Smoother
    from edgetool.runtime.classifier import Prediction

    b = Bundle.open(tiny_bundle)
    s0, s1 = b.superclasses[0], b.superclasses[1]
    a = Prediction(0, s0.name, 0, s0.subclasses[0], 0.9, 0.9)
    flick = Prediction(1, s1.name, 0, s1.subclasses[0], 0.9, 0.9)
    sm = Smoother(b, 5)
    out = [sm(p)["class"] for p in (a, a, a, flick, a, a)]
    assert out == [s0.subclasses[0]] * 6
    assert [Smoother(b, 0.0).active, Smoother(b, 0.5).alpha, Smoother(b, 4).alpha] == [False, 0.5, 0.25]


def test_failing_delta_keeps_base_serving_reported_once(bundle_copy, scenes_video):
    from edgetool.runtime.bundle.reader import Bundle
    from edgetool.runtime.camera.schedule import SceneCut

    b = Bundle.open(bundle_copy)
    broken = b.superclasses[0].name
    path = os.path.join(bundle_copy, b.deltas[0]["file"])
    with open(path, "rb") as f:
        data = bytearray(f.read())
    data[len(data) // 2] ^= 0xFF  # damaged on disk after the bundle was opened and verified
    with open(path, "wb") as f:
        f.write(bytes(data))
    s, rows = run_loop(b, scenes_video, clf=dict(policy="sticky"), cut=SceneCut())
    assert s["frames"] == len(rows) == SCENES * HOLD
    assert s["errors"] == 1 and s["failed_subclass_networks"] == [broken]
    assert b.deltas[0]["file"] in s["error_messages"][0] and "still serving the base network" in s["error_messages"][0]
    hit = [r for r in rows if r["superclass"] == broken]
    assert hit and all(r["class"] is None and r["network"] == "base" for r in hit)
    assert any(r["class"] is not None for r in rows if r["superclass"] != broken)


def test_topk_stream_uses_the_bundles_routing(bundle_copy, image_folder):
    path = os.path.join(bundle_copy, "manifest.json")
    with open(path) as f:
        m = json.load(f)
    m["routing"] = {"gate": 0.95, "k": 2, "beta": 0.25, "chosen_on": "validation split (test)"}
    with open(path, "w") as f:
        json.dump(m, f)
    proc = run_cli("camera", bundle_copy, image_folder, "--headless", "--json", "--policy", "topk")
    assert proc.returncode == 0, proc.stderr
    _, summary = records(proc.stdout)
    s = summary["settings"]
    assert (s["gate"], s["k"], s["beta"], s["routing"]) == (0.95, 2, 0.25, "validation split (test)")
    proc = run_cli("camera", bundle_copy, image_folder, "--headless", "--json", "--policy", "topk", "--k", "1")
    assert proc.returncode == 0, proc.stderr
    _, summary = records(proc.stdout)
    assert summary["settings"]["k"] == 1 and summary["settings"]["beta"] == 0.25
    proc = run_cli("camera", bundle_copy, image_folder, "--headless", "--policy", "topk", "--beta", "99")
    err = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(err) == 1 and "--beta must be in" in err[0], err
