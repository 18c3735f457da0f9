"""A new user's path on an unseen dataset: a small grayscale ImageFolder with its own three-superclass
hierarchy (tests/newcomer.py), trained, exported and classified from the CLI. One test per problem a
newcomer met: the stream policy on a file set, flip by default, grayscale read as RGB, no progress
in a log file, a misleading hierarchy error, classify's order and keys, export's size.
--help defaults, report JSON and plots are in tests/toolchain/evaluate/test_newcomer_report.py."""

import io
import json
import os
import re

import pytest

torch = pytest.importorskip("torch")
from newcomer import HIERARCHY, STAGES, TINY, edgetool, make_gray_folder, newcomer_fixture  # noqa: E402, F401
from PIL import Image  # noqa: E402


def one_error_line(proc, needle):
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode != 0 and len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    assert needle in lines[0] and "Traceback" not in proc.stderr, lines[0]
    return lines[0]


# 1. sticky is a stream policy --------------------------------------------------------------------
def test_sticky_is_refused_for_a_file_set_and_lives_with_the_stream_loop(newcomer):
    proc = edgetool("classify", newcomer["bundle"], os.path.join(newcomer["data"], "test"), "--policy", "sticky")
    line = one_error_line(proc, "stream policy")
    assert "edgetool camera" in line and "per-image" in line
    help_text = edgetool("classify", "--help").stdout
    assert "[per-image|batched|topk]" in help_text and "sticky|" not in help_text
    camera = edgetool("camera", "--help").stdout
    for flag in ("--policy [sticky", "--enter", "--leave", "--interval", "--gate", "--k"):
        assert flag in camera, flag
    # every file policy routes each image on its own: per-image and batched agree image by image
    test = os.path.join(newcomer["data"], "test")
    rows = {}
    for policy in ("per-image", "batched", "topk"):
        p = edgetool("classify", newcomer["bundle"], test, "--policy", policy, "--json", "--gate", "0.0")
        assert p.returncode == 0, p.stderr
        rows[policy] = [json.loads(x) for x in p.stdout.splitlines()]
    for policy in ("batched", "topk"):  # gate 0: topk never tries a second superclass
        for a, b in zip(rows["per-image"], rows[policy]):
            assert (a["image"], a["superclass"], a["class"]) == (b["image"], b["superclass"], b["class"])
            assert a["confidence"] == pytest.approx(b["confidence"], abs=1e-3)  # int8 rounding per batch


# 2. augmentation is chosen and recorded ----------------------------------------------------------
def test_no_flip_by_default_on_unknown_data_and_the_choice_is_recorded(newcomer, tmp_path):
    from edgetool.toolchain.data.folders import load_sample
    from edgetool.toolchain.train.run_data import TrainConfig, resolve_augment

    with open(os.path.join(newcomer["run"], "config.json")) as f:
        assert json.load(f)["augment"] == "auto"
    with open(os.path.join(newcomer["run"], "data.json")) as f:
        aug = json.load(f)["augmentation"]
    assert aug["augment"] == "none" and aug["flip"] is False and aug["why"].startswith("auto: no flip")
    # the dataset-appropriate default: the shipped Fashion-MNIST sample and CIFAR flip, explicitly said so
    sample = load_sample("test")
    assert resolve_augment(TrainConfig(), sample)["flip"] is True
    assert "Fashion-MNIST" in resolve_augment(TrainConfig(), sample)["why"]
    sample.name = "cifar-10-python.tar.gz"
    assert resolve_augment(TrainConfig(), sample)["why"].startswith("auto: flip for CIFAR")
    assert resolve_augment(TrainConfig(augment="none"), sample)["flip"] is False
    # a run that predates --augment (config.json with "flip": true) keeps flipping
    old = tmp_path / "config.json"
    old.write_text(json.dumps({"flip": True, "data": "sample"}))
    assert TrainConfig.load(str(old)).augment == "flip"
    # --augment flip on the folder is recorded where the run keeps its choices
    run = tmp_path / "run"
    proc = edgetool("train", run, "--data", newcomer["data"], *TINY, "--modes", "flat", "--augment", "flip", "-q")
    assert proc.returncode == 0, proc.stderr
    assert json.loads((run / "config.json").read_text())["augment"] == "flip"
    assert json.loads((run / "data.json").read_text())["augmentation"]["why"] == "--augment flip"
    bad = edgetool("train", tmp_path / "r2", "--data", newcomer["data"], "--augment", "mirror")
    assert bad.returncode != 0 and "mirror" in bad.stderr and "Traceback" not in bad.stderr


# 3. grayscale is detected ------------------------------------------------------------------------
def test_grayscale_folder_gives_a_one_channel_bundle(newcomer, tmp_path):
    from edgetool.runtime.bundle.reader import Bundle

    with Bundle.open(newcomer["bundle"]) as b:
        spec = b.manifest["input"]
        assert spec["shape"] == [1, 12, 12] and spec["color"] == "gray" and len(spec["mean"]) == 1
        assert spec["channels_from"].startswith("detected: all 60 training images are stored grayscale")
        assert b.samples().shape[1] == 1
    samples = os.path.getsize(os.path.join(newcomer["bundle"], "samples.npy"))
    assert samples < os.path.getsize(os.path.join(newcomer["bundle"], "base.onnx"))
    # the runtime's preprocessing honours the one channel: an RGB photo and a gray PNG both classify
    rgb = tmp_path / "rgb.png"
    Image.new("RGB", (30, 20), (200, 10, 40)).save(rgb)
    proc = edgetool("classify", newcomer["bundle"], rgb, os.path.join(newcomer["data"], "test", "bag", "0.png"))
    assert proc.returncode == 0, proc.stderr
    assert len(proc.stdout.splitlines()) == 3


def test_channels_detected_from_pixels_and_overridable(tmp_path):
    from edgetool.runtime.errors import UsageError
    from edgetool.toolchain.data.folders import load_image_folder
    from edgetool.toolchain.train.run_data import TrainConfig, load_data

    gray_as_rgb = make_gray_folder(str(tmp_path / "g"), (2, 1), mode="RGB")  # stored RGB, R = G = B
    ds = load_image_folder(os.path.join(gray_as_rgb, "train"), 12, 0)
    assert ds.channels == 1 and "R = G = B" in ds.channels_from
    colour = tmp_path / "c"
    make_gray_folder(str(colour), (2, 1))
    Image.new("RGB", (12, 12), (255, 0, 0)).save(colour / "train" / "hat" / "red.png")
    ds = load_image_folder(str(colour / "train"), 12, 0)
    assert ds.channels == 3 and ds.channels_from == "detected: red.png is in colour"
    assert load_image_folder(str(colour / "train"), 12, 1).channels == 1  # --channels 1 overrides
    with pytest.raises(UsageError, match="channels must be 1"):
        load_image_folder(str(colour / "train"), 12, 2)
    with pytest.raises(UsageError, match="--channels 3: sample holds 1-channel images"):
        load_data(TrainConfig(channels=3))  # the format fixes it for IDX, the sample and CIFAR


# 4. progress in a log file -----------------------------------------------------------------------
def test_progress_lines_are_kept_when_stderr_is_a_file(newcomer, tmp_path):
    pattern = r"^{}: epoch (\d+)/(\d+)  loss \d+\.\d{{4}}  train acc \d+\.\d\d%  \d+\.\d s$"
    for stage in STAGES:
        found = re.findall(pattern.format(re.escape(stage)), newcomer["log"], re.M)
        assert found and found[-1][0] == found[-1][1], (stage, newcomer["log"])
    flat = re.findall(pattern.format("flat network"), newcomer["log"], re.M)
    assert [e for e, _ in flat] == ["1", "2"]
    assert "\r" not in newcomer["log"]  # no bar in a file
    quiet = edgetool("train", tmp_path / "q", "--data", newcomer["data"], *TINY, "--modes", "flat", "--quiet")
    assert quiet.returncode == 0 and quiet.stderr == "", quiet.stderr
    verbose = edgetool("train", tmp_path / "q", "--modes", "flat", "-vv")  # resumes: nothing left to train
    assert "DEBUG: stage flat: " in verbose.stderr and "epoch" not in verbose.stderr


def test_on_a_terminal_the_bar_runs_and_the_epoch_lines_stay():
    from edgetool.toolchain.train.progress import FitProgress

    class Tty(io.StringIO):
        def isatty(self):
            return True

    out = Tty()
    p = FitProgress("flat network", 2, 0, 3, True, stream=out)
    for epoch in range(2):
        for _ in range(3):
            p.step(epoch, 0.5)
        p.epoch_done(epoch + 1, 0.5, 0.75, 1.25)
    p.close()
    text = out.getvalue()
    assert "\r" in text and "step" in text  # the bar
    assert "flat network: epoch 2/2  loss 0.5000  train acc 75.00%  1.2 s\n" in text
    off = Tty()
    FitProgress("x", 1, 0, 1, False, stream=off).epoch_done(1, 0.1, 0.2, 0.3)
    assert off.getvalue() == ""


# 6. errors that say what is wrong ----------------------------------------------------------------
def test_hierarchy_errors_name_the_real_problem(newcomer, tmp_path):
    proc = edgetool("train", tmp_path / "r", "--data", newcomer["data"], "--hierarchy", tmp_path / "none.json")
    line = one_error_line(proc, "none.json: no such hierarchy file (--hierarchy)")
    assert "pass --hierarchy" not in line
    bare = tmp_path / "bare"
    os.makedirs(bare / "train" / "a")
    os.makedirs(bare / "test" / "a")
    one_error_line(edgetool("train", tmp_path / "r", "--data", bare), "no hierarchy.json in the data folder")
    broken = tmp_path / "broken.json"
    broken.write_text("{")
    one_error_line(
        edgetool("train", tmp_path / "r", "--data", newcomer["data"], "--hierarchy", broken), "not valid JSON"
    )
    assert not (tmp_path / "r").exists()


# 9. classify's order, columns and keys; export's size --------------------------------------------
def test_classify_walks_folders_sorted_and_prints_whole_paths(newcomer, tmp_path):
    src = os.path.join(newcomer["data"], "test", "bag", "0.png")
    deep = tmp_path / ("a_long_folder_name_" * 3)
    rel = ["zeta/2.png", "zeta/10.png", "alpha/b.png", "alpha/a.png", "mid.png", "alpha/sub/z.png"]
    for r in rel:
        os.makedirs(os.path.dirname(deep / r), exist_ok=True)
        with open(src, "rb") as f, open(deep / r, "wb") as g:
            g.write(f.read())
    proc = edgetool("classify", newcomer["bundle"], deep, "--json")
    assert proc.returncode == 0, proc.stderr
    rows = [json.loads(x) for x in proc.stdout.splitlines()]
    want = ["alpha/a.png", "alpha/b.png", "alpha/sub/z.png", "mid.png", "zeta/10.png", "zeta/2.png"]
    assert [os.path.relpath(r["image"], deep) for r in rows] == want
    assert all("label" not in r and r["class"] in HIERARCHY[r["superclass"]] for r in rows)
    table = edgetool("classify", newcomer["bundle"], deep).stdout.splitlines()
    assert table[0].split() == ["superclass", "class", "confidence", "image"]
    assert [line.split()[-1] for line in table[1:]] == [str(deep / w) for w in want]  # whole paths, last


def test_export_reports_the_size_of_every_file(newcomer):
    files = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(newcomer["bundle"]) for f in fs)
    man = json.load(open(os.path.join(newcomer["bundle"], "manifest.json")))
    deltas = sum(d["stored_size"] for d in man["deltas"])
    rest = files - man["base"]["size"] - deltas
    assert rest >= os.path.getsize(os.path.join(newcomer["bundle"], "manifest.json"))
    assert (
        "({} bytes in all: base.onnx {}, 3 deltas {} (zstd), manifest and samples {})".format(
            files, man["base"]["size"], deltas, rest
        )
        in newcomer["export"]
    )
