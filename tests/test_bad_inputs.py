"""Bad images, bad command lines and signals: one error line, the project's error type, nothing changed."""

import json
import os
import signal
import struct
import subprocess
import sys
import time
import zlib

import numpy as np
import pytest

from edgetool.cli import main
from edgetool.runtime.errors import UsageError
from edgetool.runtime.preprocess import load_image

from hostile import private_tmp, snapshot  # noqa: F401


def _png(path, w, h, bits=8):
    def chunk(t, d):
        return struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d) & 0xFFFFFFFF)

    with open(path, "wb") as f:
        f.write(
            b"\x89PNG\r\n\x1a\n"
            + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, bits, 0, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\0" * 1000))
            + chunk(b"IEND", b"")
        )
    return path


def _npy(path, array, **kw):
    np.save(path, array, **kw)
    return path


def _bytes(path, data):
    with open(path, "wb") as f:
        f.write(data)
    return path


IMAGES = [
    ("png_50000_squared", lambda p: _png(p + ".png", 50000, 50000), "decompression bomb"),
    ("png_over_our_cap", lambda p: _png(p + ".png", 12000, 12000), "more than the 64000000 allowed"),
    ("png_garbage", lambda p: _bytes(p + ".png", b"\x89PNG\r\n\x1a\nnot really"), "cannot read image"),
    ("npy_5_channels", lambda p: _npy(p + ".npy", np.zeros((4, 4, 5), np.uint8)), "5 channels"),
    ("npz_renamed_npy", lambda p: _bytes(p + ".npy", _npz()), "not a numpy array file"),
    ("npy_zero_bytes", lambda p: _bytes(p + ".npy", b""), "not a numpy array file"),
    ("npy_0x0", lambda p: _npy(p + ".npy", np.zeros((0, 0), np.uint8)), "empty image"),
    ("npy_pickled_objects", lambda p: _npy(p + ".npy", np.array([{}], dtype=object), allow_pickle=True), "object"),
    ("npy_float", lambda p: _npy(p + ".npy", np.zeros((4, 4), np.float32)), "expected a uint8"),
    ("npy_truncated", lambda p: _bytes(p + ".npy", _npy_bytes(np.zeros((28, 28), np.uint8))[:-10]), "bytes of data"),
    ("npy_4d", lambda p: _npy(p + ".npy", np.zeros((1, 4, 4, 3), np.uint8)), "expected a uint8"),
    ("npy_huge_header", lambda p: _bytes(p + ".npy", _npy_header((100000, 100000))), "more than the"),
]


def _npz():
    import io

    buf = io.BytesIO()
    np.savez(buf, x=np.zeros((2, 2), np.uint8))
    return buf.getvalue()


def _npy_bytes(a):
    import io

    buf = io.BytesIO()
    np.save(buf, a)
    return buf.getvalue()


def _npy_header(shape):
    return _npy_bytes(np.zeros((1, 1), np.uint8)).replace(b"(1, 1)", str(tuple(shape)).encode())[:-1]


@pytest.mark.parametrize("name,make,needle", IMAGES, ids=[c[0] for c in IMAGES])
def test_bad_image_refused(tmp_path, name, make, needle):
    path = make(str(tmp_path / name))
    before = snapshot(str(tmp_path))
    with pytest.raises(UsageError) as exc:
        load_image(path)
    assert needle in str(exc.value) and path in str(exc.value), str(exc.value)
    assert snapshot(str(tmp_path)) == before


def test_bad_image_through_classify_is_one_line_not_abort(tiny_bundle, tmp_path, capsys):
    path = _bytes(str(tmp_path / "empty.npy"), b"")
    with pytest.raises(SystemExit) as code:
        main(["classify", tiny_bundle, path])
    err = capsys.readouterr().err.strip().splitlines()
    assert code.value.code not in (0, 130) and len(err) == 1 and "empty.npy: not a numpy array file" in err[0]


def test_16_bit_grey_png_keeps_its_levels(tmp_path):
    from PIL import Image

    a16 = (np.arange(64 * 64).reshape(64, 64) * 16).astype(np.uint16)
    Image.fromarray(a16).save(str(tmp_path / "g16.png"))
    got = load_image(str(tmp_path / "g16.png"))
    assert got.dtype == np.uint8 and got.shape == (64, 64)
    np.testing.assert_array_equal(got, ((a16.astype(np.int64) * 255 + 32767) // 65535).astype(np.uint8))
    assert len(np.unique(got)) > 200  # not clipped to two levels


def _cli(args, capsys):
    with pytest.raises(SystemExit) as code:
        main([str(a) for a in args])
    out = capsys.readouterr()
    lines = out.err.strip().splitlines()
    assert code.value.code not in (0, None) and len(lines) == 1 and lines[0].startswith("error: "), out
    return lines[0]


def test_export_refuses_an_existing_file(tiny_run, tmp_path, capsys):
    target = tmp_path / "notes.txt"
    target.write_text("mine")
    assert "exists and is not a folder" in _cli(["export", tiny_run.path, "--out", target], capsys)
    assert target.read_text() == "mine"


def test_export_refuses_a_folder_that_is_not_a_bundle(tiny_run, tmp_path, capsys):
    out = tmp_path / "photos"
    out.mkdir()
    (out / "manifest.json").write_text('{"not": "an edgetool manifest"}')
    (out / "holiday.jpg").write_bytes(b"\xff\xd8 precious")
    before = snapshot(str(tmp_path))
    assert "is not an edgetool bundle" in _cli(["export", tiny_run.path, "--out", out], capsys)
    assert snapshot(str(tmp_path)) == before
    assert "is not an edgetool bundle" in _cli(["export", tiny_run.path, "--out", out, "--archive"], capsys)
    assert snapshot(str(tmp_path)) == before


def test_export_without_a_qat_checkpoint_refuses_instead_of_training(tiny_run, tmp_path, capsys):
    import shutil

    run = str(tmp_path / "run")
    shutil.copytree(tiny_run.path, run)
    os.remove(os.path.join(run, "qat", "1.pt"))
    before = snapshot(run)
    assert "missing qat/1.pt" in _cli(["export", run, "--out", tmp_path / "b"], capsys)
    assert snapshot(run) == before and not (tmp_path / "b").exists()


@pytest.mark.parametrize(
    "args,needle",
    [
        (["--epochs", "0"], "--epochs must be >= 1"),
        (["--batch", "0"], "--batch must be >= 1"),
        (["--config", "/nonexistent/cfg.json"], "no such config file"),
        (["--config", "BADJSON"], "not valid JSON"),
        (["--config", "BADTYPE"], "epochs = 'x' is not int"),
        (["--data", "/nonexistent/data"], "no such data folder"),
        (["--hierarchy", "UNKNOWN_CLASS"], "not in the data: 'Unicorn'"),
        (["--hierarchy", "SLASH_NAME"], "single path component"),
        (["--hierarchy", "DUP_NAME"], "duplicate name 'tops'"),
    ],
    ids=[
        "epochs0",
        "batch0",
        "config-missing",
        "config-not-json",
        "config-type",
        "data-missing",
        "hier-unknown",
        "hier-slash",
        "hier-dup",
    ],
)
def test_train_refuses_bad_inputs_before_writing_anything(tmp_path, capsys, args, needle):
    from edgetool.toolchain.data.folders import sample_hierarchy_path

    with open(sample_hierarchy_path()) as f:
        h = json.load(f)
    files = {"BADJSON": "{nope", "BADTYPE": json.dumps({"epochs": "x"})}
    if "UNKNOWN_CLASS" in args:
        h["superclasses"][0]["subclasses"].append("Unicorn")
    if "SLASH_NAME" in args:
        h["superclasses"][0]["name"] = "to/ps"
    if "DUP_NAME" in args:
        h["superclasses"][1]["name"] = "tops"
    files.update(UNKNOWN_CLASS=json.dumps(h), SLASH_NAME=json.dumps(h), DUP_NAME=json.dumps(h))
    for i, a in enumerate(args):
        if a in files:
            (tmp_path / a).write_text(files[a])
            args = args[:i] + [str(tmp_path / a)] + args[i + 1 :]
    run = tmp_path / "run"
    assert needle in _cli(["train", run] + args, capsys)
    assert not run.exists()  # no config.json holding the bad input, no folder


CLASSIFY_SLOWLY = [sys.executable, "-m", "edgetool", "classify", "--policy", "per-image", "--batch", "1"]


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP], ids=["SIGTERM", "SIGHUP"])
def test_signal_during_classify_cleans_up_the_unpacked_archive(tiny_bundle, tmp_path, private_tmp, sig):  # noqa: F811
    from edgetool.export.atomic import write_archive

    archive = write_archive(tiny_bundle, str(tmp_path / "b.tar.gz"))
    images = tmp_path / "images"
    images.mkdir()
    for i in range(3000):
        np.save(str(images / "{:04d}.npy".format(i)), np.full((28, 28), i % 255, np.uint8))
    env = dict(os.environ, TMPDIR=private_tmp, EDGETOOL_THREADS="1")
    # default dispositions in the child even under nohup: a signal ignored at start (SIG_IGN) stays ignored
    proc = subprocess.Popen(
        CLASSIFY_SLOWLY + [archive, str(images)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: signal.signal(sig, signal.SIG_DFL),
    )
    deadline = time.time() + 120

    def unpacked():
        return [e for e in os.listdir(private_tmp) if "edgetool" in e]

    while not unpacked() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    time.sleep(0.5)
    assert proc.poll() is None, "classify ended before the signal"
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + sig, err
    assert "terminated by {}".format(signal.Signals(sig).name) in err and "Traceback" not in err
    assert [e for e in os.listdir(private_tmp) if "edgetool" in e] == []


MASKED_SIGNAL = """
import os, signal, click
from edgetool import cli
from edgetool.runtime.errors import UsageError

@click.command("masked")
def masked():
    # what C code may do when a signal's exception arrives inside a callback: raise its own error, or clear it
    try:
        os.kill(os.getpid(), signal.{sig})
        for _ in range(10**6):
            pass
    except KeyboardInterrupt:
        if {swallow}:
            return
        raise UsageError("an unrelated error") from None

cli.COMMANDS["masked"] = ("__main__", "masked", "")
cli.main(["masked"])
"""


@pytest.mark.parametrize("swallow", [False, True], ids=["replaced", "swallowed"])
@pytest.mark.parametrize("sig", ["SIGTERM", "SIGHUP"])
def test_a_signal_masked_by_a_c_extension_still_ends_the_command_as_terminated(sig, swallow):
    proc = subprocess.run(
        [sys.executable, "-c", MASKED_SIGNAL.format(sig=sig, swallow=swallow)],
        capture_output=True,
        text=True,
        timeout=60,
        preexec_fn=lambda: signal.signal(getattr(signal, sig), signal.SIG_DFL),
    )
    assert proc.returncode == 128 + getattr(signal, sig), proc.stderr
    assert proc.stderr.strip() == "terminated by {}".format(sig)


def test_load_npy_reads_data_and_refuses_a_short_or_long_file(tmp_path):
    a = np.arange(28 * 28, dtype=np.uint8).reshape(28, 28)
    path = _npy(str(tmp_path / "a.npy"), a)
    got = load_image(path)
    assert got.flags.writeable and np.array_equal(got, a)
    raw = open(path, "rb").read()
    for name, data in (("short.npy", raw[:-5]), ("long.npy", raw + b"x")):
        (tmp_path / name).write_bytes(data)
        with pytest.raises(UsageError, match="not a numpy array file"):
            load_image(str(tmp_path / name))
