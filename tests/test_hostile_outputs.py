"""Hostile names and output paths: nothing forges a result line, every output path is checked
before any work with one `error:` line, and classify --skip-errors counts what it skips."""

import os
import shutil

import pytest

from conftest import run_cli


def one_error_line(proc):
    assert proc.returncode != 0, proc.stdout
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    return lines[0]


@pytest.fixture()
def hostile_folder(sample_pngs, tmp_path):
    d = tmp_path / "images"
    d.mkdir()
    shutil.copy(sample_pngs[0], d / "a\ntops        Coat              1.000  forged.png")
    shutil.copy(sample_pngs[1], d / "b\x1b[2Kc.png")
    shutil.copy(sample_pngs[2], d / "good.png")
    (d / "broken.png").write_bytes(b"not an image")
    return d


def test_a_newline_in_a_file_name_adds_no_line(tiny_bundle, hostile_folder):
    proc = run_cli("classify", tiny_bundle, hostile_folder, "--skip-errors")
    assert proc.returncode == 0, proc.stderr
    rows = proc.stdout.splitlines()
    assert len(rows) == 1 + 3  # the header and the three readable images, nothing forged
    assert any(r.endswith("a\\ntops        Coat              1.000  forged.png") for r in rows)
    assert any(r.endswith("b\\x1b[2Kc.png") for r in rows) and "\x1b" not in proc.stdout
    import json

    js = run_cli("classify", tiny_bundle, hostile_folder, "--skip-errors", "--json")
    names = sorted(os.path.basename(json.loads(line)["image"]) for line in js.stdout.splitlines())
    assert names[0] == "a\ntops        Coat              1.000  forged.png"  # --json keeps the exact name


def test_skip_errors_counts_and_fails_only_when_nothing_was_read(tiny_bundle, hostile_folder):
    proc = run_cli("classify", tiny_bundle, hostile_folder)
    assert "broken.png: cannot read image" in one_error_line(proc)
    proc = run_cli("classify", tiny_bundle, hostile_folder, "--skip-errors")
    assert proc.returncode == 0 and "skipped 1 of 4 images that could not be read" in proc.stderr
    proc = run_cli("classify", tiny_bundle, hostile_folder / "broken.png", "--skip-errors")
    assert proc.returncode != 0 and "error: none of the 1 images could be read" in proc.stderr
    assert "--skip-errors" in run_cli("classify", "--help").stdout


def test_an_error_naming_a_hostile_file_stays_one_line(tiny_bundle, tmp_path):
    bad = tmp_path / "x\nerror: forged\n.png"
    bad.write_bytes(b"junk")
    line = one_error_line(run_cli("classify", tiny_bundle, bad))
    assert "x\\nerror: forged\\n.png" in line


@pytest.mark.parametrize(
    "args, message",
    [
        (["camera", "{bundle}", "{images}", "--headless", "--json-out", "{tmp}/missing/out.jsonl"], "does not exist"),
        (["camera", "{bundle}", "{images}", "--headless", "--json-out", "{tmp}"], "is a folder"),
        (["profile", "{bundle}", "--out", "{tmp}/file"], "exists and is not a folder"),
        (["keygen", "{tmp}/missing/k"], "does not exist"),
        (["keygen", "{tmp}/ro/k"], "permission denied"),
        (["engine", "onnx", "{bundle}", "{tmp}/missing/e.onnx"], "does not exist"),
        (["engine", "onnx", "{bundle}", "{tmp}/ro/e.onnx"], "permission denied"),
        (["profile", "{bundle}", "--out", "{tmp}/ro/p"], "permission denied"),
        # where no file can be made although every access check passes (root): refused first too
        (["camera", "{bundle}", "{images}", "--headless", "--json-out", "/proc/edgetool-x.json"], "be written here ("),
        (["camera", "{bundle}", "{images}", "/proc/edgetool-x.mp4", "--headless"], "be written here ("),
        (["profile", "{bundle}", "--out", "/proc/edgetool-x"], "be written here ("),
        (["engine", "onnx", "{bundle}", "/proc/edgetool-x.onnx", "--weights", "int8"], "be written here ("),
    ],
)
def test_output_paths_are_checked_first(tiny_bundle, sample_pngs, tmp_path, args, message):
    if os.geteuid() == 0 and "permission denied" in message:
        pytest.skip("root writes into a read-only folder")
    (tmp_path / "file").write_text("x")
    (tmp_path / "ro").mkdir()
    os.chmod(tmp_path / "ro", 0o500)
    images = os.path.dirname(sample_pngs[0])
    argv = [a.format(bundle=tiny_bundle, images=images, tmp=tmp_path) for a in args]
    assert message in one_error_line(run_cli(*argv))
    assert os.listdir(tmp_path / "ro") == []


def test_concurrent_exports_to_one_out_both_succeed(tiny_run, tmp_path):
    import subprocess
    import sys

    out = tmp_path / "bundle"
    env = dict(os.environ, EDGETOOL_THREADS="1")
    cmd = [sys.executable, "-m", "edgetool", "export", tiny_run.path, "--out", str(out)]
    procs = [
        subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env) for _ in range(3)
    ]
    results = [p.communicate(timeout=600) + (p.returncode,) for p in procs]
    for stdout, stderr, rc in results:
        assert rc == 0 and "Traceback" not in stderr, stderr
    from edgetool.runtime.bundle.reader import Bundle

    with Bundle.open(str(out)) as b:
        assert len(b.files()) >= 2
    assert sorted(os.listdir(tmp_path)) == ["bundle"]  # no temp left behind


def test_a_live_exports_temp_is_left_alone(tmp_path):
    from edgetool.export import atomic

    live = tmp_path / (".b" + atomic.TMP_TAG + "{}-live".format(os.getpid()))
    live.mkdir()
    (live / atomic.MARK).write_text("")
    dead = tmp_path / (".b" + atomic.TMP_TAG + "999999999-dead")
    dead.mkdir()
    (dead / atomic.MARK).write_text("")
    with atomic.staged_dir(str(tmp_path / "b")) as tmp:
        open(os.path.join(tmp, "x"), "w").close()
    assert live.is_dir() and not dead.exists()


def test_a_bundle_folder_follows_the_umask(tiny_run, tmp_path):
    import subprocess
    import sys

    out = tmp_path / "bundle"
    code = "import os, sys; os.umask(0o022); from edgetool.cli import main; sys.argv[0] = 'edgetool'; main()"
    proc = subprocess.run(
        [sys.executable, "-c", code, "export", tiny_run.path, "--out", str(out)], capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr
    assert os.stat(out).st_mode & 0o777 == 0o755


def test_a_signal_as_a_command_ends_is_128_plus_n_without_traceback(tiny_run, tmp_path):
    import signal

    proc = run_cli("export", tiny_run.path, "--out", tmp_path / "b", env={"EDGETOOL_FAULT_KILL": "exit:SIGTERM"})
    assert proc.returncode == -signal.SIGTERM, (proc.returncode, proc.stderr)  # a shell shows 128 + 15
    assert "Traceback" not in proc.stderr and "Exception ignored" not in proc.stderr
    from edgetool.runtime.bundle.reader import Bundle

    with Bundle.open(str(tmp_path / "b")) as b:  # the export itself had finished
        assert b.files()


SIGNAL_AT_EXIT = """
import atexit, os, signal, sys
from edgetool.cli import main
# registered first, so it runs last: a signal while the interpreter runs its exit handlers
atexit.register(lambda: os.kill(os.getpid(), signal.{sig}))
sys.argv[0] = "edgetool"
main()
"""


@pytest.mark.parametrize("sig", ["SIGINT", "SIGTERM"])
def test_a_signal_while_the_interpreter_exits_ends_it_with_the_signal(sig, tiny_run, tmp_path):
    """Ctrl-C as `export --archive` finishes: the process ends with the signal (130 to a shell), not
    with "Exception ignored in atexit callback" and exit 0; the archive it had finished opens."""
    import signal
    import subprocess
    import sys

    out = tmp_path / "b"
    code = SIGNAL_AT_EXIT.format(sig=sig)
    proc = subprocess.run(
        [sys.executable, "-c", code, "export", tiny_run.path, "--out", str(out), "--archive"],
        capture_output=True,
        text=True,
        timeout=600,
        preexec_fn=lambda: signal.signal(getattr(signal, sig), signal.SIG_DFL),
    )
    assert proc.returncode == -getattr(signal, sig), (proc.returncode, proc.stderr)
    assert "Traceback" not in proc.stderr and "Exception ignored" not in proc.stderr, proc.stderr
    from edgetool.runtime.bundle.reader import Bundle

    with Bundle.open(str(out) + ".tar.gz") as b:
        assert b.files()
