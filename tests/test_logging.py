"""One ``edgetool`` logger: -v shows what the tool does on stderr, -q keeps only errors, stdout is unchanged."""

import logging

from edgetool.runtime import log


def test_verbosity_levels_and_one_handler():
    assert [log.level_for(v) for v in (-1, 0, 1, 2, 3)] == [
        logging.ERROR,
        logging.WARNING,
        logging.INFO,
        logging.DEBUG,
        logging.DEBUG,
    ]
    logger = logging.getLogger("edgetool")
    others = [h for h in logger.handlers if not getattr(h, "_edgetool", False)]  # e.g. the test runner's own
    log.configure(1)
    log.configure(2)
    ours = [h for h in logger.handlers if getattr(h, "_edgetool", False)]
    assert logger.level == logging.DEBUG and len(ours) == 1
    assert [h for h in logger.handlers if h not in ours] == others  # configure adds one handler, once
    child = logging.getLogger("edgetool.runtime.trt.loader")
    assert child.getEffectiveLevel() == logging.DEBUG
    log.configure(0)


def test_v_and_q_on_the_root_command(run_cli, tiny_bundle, sample_pngs):
    quiet = run_cli("-q", "classify", tiny_bundle, sample_pngs[0])
    plain = run_cli("classify", tiny_bundle, sample_pngs[0])
    verbose = run_cli("-v", "classify", tiny_bundle, sample_pngs[0])
    assert quiet.returncode == plain.returncode == verbose.returncode == 0
    assert quiet.stdout == plain.stdout == verbose.stdout
    assert quiet.stderr == plain.stderr == ""
    assert [line.split(":")[0] for line in verbose.stderr.splitlines()] == ["INFO"]
    assert "onnxruntime" in verbose.stderr and "refittable tensors bound once" in verbose.stderr
    bad = run_cli("-q", "classify", tiny_bundle, "/nonexistent.png")
    assert bad.returncode != 0 and bad.stderr.startswith("error: ")


def test_v_and_q_after_any_command(run_cli, tiny_bundle, sample_pngs):
    verbose = run_cli("classify", tiny_bundle, sample_pngs[0], "-v")
    assert verbose.returncode == 0 and "INFO: onnxruntime" in verbose.stderr, verbose.stderr
    for args in (["inspect", tiny_bundle, "-q"], ["target", "status", "nowhere", "-v"], ["devices", "-q"]):
        proc = run_cli(*args)
        assert proc.returncode == 0 and "no such option" not in proc.stderr, (args, proc.stderr)
