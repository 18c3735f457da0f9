"""A new user's path on an unseen dataset: a small grayscale ImageFolder with its own three-superclass
hierarchy, trained, exported, classified and reported from the CLI. One test per problem a
newcomer met: the stream policy on a file set, flip by default, grayscale read as RGB, no
progress in a log file, defaults missing from --help, a misleading hierarchy error, report JSON
and figures, classify's order and keys."""

import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")
from PIL import Image  # noqa: E402

HIERARCHY = {"tops": ["shirt", "coat"], "feet": ["boot", "sandal"], "misc": ["bag", "hat"]}
TINY = ["--image-size", "12", "--epochs", "2", "--base-epochs", "1", "--ft-epochs", "1", "--qat-epochs", "1"]
TINY += ["--batch", "16"]
STAGES = ["flat network", "superclass network", "vanilla subclass [tops]", "QAT superclass network"]
STAGES += ["QAT subclass [misc]"]


def make_gray_folder(root, per_class=(10, 4), mode="L"):
    """train/ and test/ ImageFolder trees of 12x12 grayscale PNGs (a bar per class), and hierarchy.json."""
    rng = np.random.default_rng(0)
    names = [c for cs in HIERARCHY.values() for c in cs]
    for split, n in zip(("train", "test"), per_class):
        for ci, c in enumerate(names):
            os.makedirs(os.path.join(root, split, c), exist_ok=True)
            for i in range(n):
                a = np.zeros((12, 12))
                a[:, 2 * ci : 2 * ci + 2] = 200
                a = np.clip(a + rng.normal(0, 20, a.shape), 0, 255).astype(np.uint8)
                Image.fromarray(a, "L").convert(mode).save(os.path.join(root, split, c, "{}.png".format(i)))
    with open(os.path.join(root, "hierarchy.json"), "w") as f:
        json.dump({"superclasses": [{"name": k, "subclasses": v} for k, v in HIERARCHY.items()]}, f)
    return str(root)


def edgetool(*args, stderr_file=None):
    """The CLI in a subprocess; stderr to a real file when *stderr_file* is given (not a terminal)."""
    env = dict(os.environ, EDGETOOL_THREADS="2")
    cmd = [sys.executable, "-m", "edgetool"] + [str(a) for a in args]
    if stderr_file is None:
        return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    with open(stderr_file, "w") as err:
        proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=err, text=True, env=env, timeout=600)
    with open(stderr_file) as f:
        proc.stderr = f.read()
    return proc


@pytest.fixture(scope="module")
def newcomer(tmp_path_factory):
    """A trained run and its bundle on the grayscale folder; train's stderr went to a log file."""
    tmp = tmp_path_factory.mktemp("newcomer")
    data = make_gray_folder(str(tmp / "data"))
    run, log = tmp / "run", tmp / "train.log"
    proc = edgetool("train", run, "--data", data, *TINY, stderr_file=log)
    assert proc.returncode == 0, proc.stderr
    bundle = tmp / "bundle"
    exported = edgetool("export", run, "--out", bundle)
    assert exported.returncode == 0, exported.stderr
    return {"data": data, "run": str(run), "bundle": str(bundle), "log": proc.stderr, "export": exported.stdout}


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
    from edgetool.toolchain.data import load_sample
    from edgetool.toolchain.run_data import TrainConfig, resolve_augment

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
    from edgetool.runtime.bundle import Bundle

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
    from edgetool.toolchain.data import load_image_folder

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
    import io

    from edgetool.toolchain.progress import FitProgress

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


# 5. defaults in --help ---------------------------------------------------------------------------
def _options_without_default(ctx, name, cmd):
    import click

    if isinstance(cmd, click.Group):
        for sub in cmd.list_commands(ctx):
            yield from _options_without_default(ctx, name + " " + sub, cmd.get_command(ctx, sub))
        return
    for p in cmd.params:
        if isinstance(p, click.Option) and not (p.is_flag or p.required or p.count or p.name == "help"):
            if not p.show_default:
                yield "{} {}".format(name, p.opts[0])


def test_every_option_shows_its_default():
    import click

    from edgetool.cli import COMMANDS, cli

    ctx = click.Context(cli)
    missing = [m for n in sorted(COMMANDS) for m in _options_without_default(ctx, n, cli.get_command(ctx, n))]
    assert missing == []
    text = edgetool("train", "--help").stdout
    for flag, default in (("--epochs", 8), ("--ft-epochs", 10), ("--qat-epochs", 2), ("--batch", 128)):
        assert re.search(re.escape(flag) + r" INTEGER[^[]*\[default:\s+{}\]".format(default), text), flag
    assert re.search(r"--lr FLOAT[^[]*\[default:\s+0\.003\]", text)
    assert "upper bound" in text.split("--ft-epochs")[1].split("--ft-lr")[0]  # the oracle's epochs


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


# 7. strict JSON, stated networks and bundle size -------------------------------------------------
def test_report_json_is_strict_when_the_bounds_tie(newcomer, tmp_path, monkeypatch):
    from edgetool.toolchain import bounds, evaluate
    from edgetool.toolchain.cli import summary_line
    from edgetool.toolchain.pipeline import Run
    from edgetool.toolchain.report import gap_closed

    real = bounds.measure

    def tied(run, bundle_dir, manifest=None):
        m = real(run, bundle_dir, manifest)
        m["correct"]["upper"] = m["correct"]["lower"].copy()
        m["accuracy"]["upper"] = m["accuracy"]["lower"]
        m["gap_closed"] = {k: gap_closed(m["accuracy"][k], *[m["accuracy"]["lower"]] * 2) for k in m["gap_closed"]}
        return m

    monkeypatch.setattr(evaluate.bounds, "measure", tied)
    run = Run.open(newcomer["run"], progress=False)
    rep = evaluate.evaluate(run, newcomer["bundle"], str(tmp_path))
    text = (tmp_path / "report.json").read_text()
    strict = json.loads(text, parse_constant=lambda c: pytest.fail("non-strict JSON constant " + c))
    assert "NaN" not in text and strict["gap_closed"]["vanilla"] == {
        "value": None,
        "reason": rep["gap_closed"]["vanilla"]["reason"],
    }
    assert "does not exceed" in strict["gap_closed"]["vanilla"]["reason"]
    line = summary_line(strict)
    assert "nan" not in line and "gap closed n/a" in line and "gap closed is undefined: the upper bound" in line
    md = (tmp_path / "report.md").read_text()
    assert "n/a (the upper bound" in md and "nan" not in md
    # every figure names its network, and the report gives the bundle's size (every file)
    files = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(newcomer["bundle"]) for f in fs)
    assert strict["bundle_bytes"]["files"] == files and "bundle {} bytes".format(files) in line
    assert set(strict["networks"]) >= {"lower", "control", "upper", "vanilla", "efficient", "confusion"}
    assert strict["confusion_network"].startswith("superclass (base) network")
    assert "Networks: lower: flat network" in md and "Bundle: {} bytes in all".format(files) in md
    assert strict["augmentation"]["augment"] == "none" and strict["input"]["shape"] == [1, 12, 12]
    assert "Training augmentation: none" in md and "Input: 1x12x12 (detected" in md


def test_an_empty_superclass_is_null_not_nan():
    from edgetool.toolchain.report import per_group_accuracy

    acc = per_group_accuracy([True, False, True], [0, 0, 2], 3)
    assert acc == [0.5, None, 1.0]
    json.dumps(acc, allow_nan=False)


# 8. plots that zoom to the data ------------------------------------------------------------------
def _figures(monkeypatch, tmp_path, rep):
    from edgetool.toolchain import evaluate

    figs = {}
    monkeypatch.setattr(evaluate, "_save", lambda fig, out, name: figs.setdefault(name, fig) and name)
    evaluate.make_plots(rep, str(tmp_path))
    return figs


def _plot_rep():
    names = ["tops", "feet", "misc"]
    hist = np.zeros(256, dtype=np.int64)
    hist[128] = 5000  # delta 0
    hist[127], hist[129], hist[131] = 300, 280, 2  # -1, +1, +3
    return {
        "superclasses": names,
        "confusion_percent": [[98, 1, 1], [0, 100, 0], [2, 0, 98]],
        "per_superclass_accuracy": {
            "lower": [0.96, 0.98, None],
            "control": [0.97, 0.99, 1.0],
            "upper": [0.99, 1.0, 1.0],
            "vanilla": [0.98, 0.99, 1.0],
            "efficient": [0.98, 0.985, 1.0],
        },
        "deltas": {n: {"histogram": hist.tolist(), "changed_fraction": 0.1} for n in names},
        "compression": {n: {"fp16_7z_no_qat": 0.5, "bundle_x": 0.3} for n in names},
        "codec": "zstd",
    }


def test_per_superclass_plot_zooms_and_its_legend_covers_no_bar(monkeypatch, tmp_path):
    figs = _figures(monkeypatch, tmp_path, _plot_rep())
    fig = figs["per_superclass.png"]
    ax = fig.axes[0]
    lo, hi = ax.get_ylim()
    assert 92 <= lo <= 93.5 and hi == 100  # 96-100% fills the axis, not 0-100
    fig.canvas.draw()
    legend = ax.get_legend().get_window_extent()
    bars = [p.get_window_extent() for p in ax.patches if p.get_height() == p.get_height()]
    assert bars and not any(legend.overlaps(b) for b in bars)


def test_delta_histogram_draws_only_counts_and_zooms_to_the_deltas(monkeypatch, tmp_path):
    figs = _figures(monkeypatch, tmp_path, _plot_rep())
    for ax in figs["delta_histograms.png"].axes:
        heights = sorted(p.get_height() for p in ax.patches)
        assert heights == [2, 280, 300, 5000]  # no empty bins drawn on the log axis
        assert ax.get_yscale() == "log" and ax.get_xlim() == (-4, 4)  # not a fixed +-40


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
