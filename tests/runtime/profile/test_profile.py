"""edgetool profile: report schema, percentile order, the HTML page in headless Chromium,
and the verified-delta shortcut never applying a delta changed on disk."""

import json
import os
import shutil
import subprocess
import sys
import time

import numpy as np
import pytest

from conftest import ROOT, run_cli


@pytest.fixture(scope="module")
def profiled(tiny_bundle, tmp_path_factory):
    """One CLI run of edgetool profile on the tiny bundle (short loops)."""
    out = str(tmp_path_factory.mktemp("profile"))
    p = run_cli(
        "profile",
        tiny_bundle,
        "--out",
        out,
        "--iterations",
        "3",
        "--warmup",
        "1",
        "--batch",
        "4",
        "--threads",
        "1",
        timeout=900,
    )
    assert p.returncode == 0, p.stderr
    return out, p


def test_profile_writes_json_markdown_html(profiled):
    out, p = profiled
    assert "switch to subclass: median" in p.stdout and "resident memory: efficient" in p.stdout
    for name in ("profile.json", "profile.md", "profile.html"):
        assert os.path.getsize(os.path.join(out, name)) > 500
    md = open(os.path.join(out, "profile.md")).read()
    for title in ("Latency per stage", "End to end per image", "Memory", "Ratios", "Estimates for other devices"):
        assert "## " + title in md
    assert md.count("(estimate)") == 8  # one row per other device profile, each labelled
    assert "- jetson: no Jetson telemetry here (not a Jetson" in md and "{" not in md  # words, no raw JSON


def test_profile_json_schema_and_percentiles(profiled):
    from edgetool.runtime.profile.schema import problems

    with open(os.path.join(profiled[0], "profile.json")) as f:
        report = json.load(f, parse_constant=lambda c: pytest.fail("non-strict JSON constant " + c))
    assert problems(report) == []
    assert set(report["end_to_end"]) == {"one-engine", "two-engine"}
    assert set(report["end_to_end"]["one-engine"]) == {"per-image", "batched", "sticky", "topk"}
    for s in list(report["stages"].values()) + [
        r["per_image_ms"] for m in report["end_to_end"].values() for r in m.values()
    ]:
        if s["count"]:
            assert s["min"] <= s["median"] <= s["p90"] <= s["p95"] <= s["p99"] <= s["max"]
    mem = report["memory"]["forms"]
    assert (
        mem["vanilla"]["weight_buffer_bytes"]
        == (report["bundle"]["superclasses"] + 1) * report["bundle"]["refit_bytes"]
    )
    broken = json.loads(json.dumps(report))
    broken["stages"]["switch_to_subclass"]["p90"] = broken["stages"]["switch_to_subclass"]["max"] + 1
    del broken["codecs"]
    assert problems(broken) == ["codecs: missing or not dict"]
    del broken["stages"]["cold_load"]
    broken["codecs"] = report["codecs"]
    found = problems(broken)
    assert "stages.cold_load: missing" in found and any("percentiles out of order" in f for f in found)


def test_stat_percentiles_consistent():
    from edgetool.runtime.profile.stats import consistent, stat

    rng = np.random.default_rng(0)
    for values in (rng.exponential(2.0, 500), [3.0], rng.normal(10, 1, 7)):
        s = stat(list(values))
        assert consistent(s) and len(s["cdf"]) == 21 and s["cdf"][0] == s["min"] and s["cdf"][-1] == s["max"]
    assert not consistent(
        {"count": 3, "min": 1.0, "median": 2.0, "p90": 5.0, "p95": 4.0, "p99": 5.0, "max": 6.0, "mean": 3.0}
    )


@pytest.mark.parametrize("fmt", ["png", "svg"])
def test_html_report_renders_every_plot_in_chromium(profiled, tmp_path, fmt):
    from edgetool.runtime.profile.report import to_html

    if fmt == "png":
        pytest.importorskip("matplotlib")
    if not any(shutil.which(b) for b in ("chromium", "chromium-browser", "google-chrome")):
        pytest.skip("no Chromium here (Debian's chromium package; .ci/run installs it)")
    with open(os.path.join(profiled[0], "profile.json")) as f:
        report = json.load(f)
    page = tmp_path / "profile.html"
    page.write_text(to_html(report, fmt))
    assert "http" not in page.read_text().replace("http://www.w3.org/2000/svg", "")  # self-contained
    script = os.path.join(ROOT, "benchmarks", "common", "browser.py")  # the renderer performance.py uses
    p = subprocess.run([sys.executable, script, str(page), str(tmp_path / "shot.png")], capture_output=True, text=True)
    if p.returncode == 2:
        pytest.skip("Chromium cannot start here: {}".format(p.stderr.strip()))
    assert p.returncode == 0, p.stderr
    result = json.loads(p.stdout)
    assert result["plots"] == 4 and result["rendered"] == 4, result
    assert result["figures"] == {"breakdown": "yes", "cdf": "yes", "memory": "yes", "storage": "yes"}
    assert (tmp_path / "shot.png").stat().st_size > 10000


def test_profile_bad_input_one_line(tiny_bundle, tmp_path):
    for args in (
        ["profile", str(tmp_path / "nope")],
        ["profile", tiny_bundle, "--modes", "three-engine"],
        ["profile", tiny_bundle, "--iterations", "0"],
        ["profile", tiny_bundle, "--device-profile", "pi"],
    ):
        p = run_cli(*args)
        assert p.returncode != 0
        lines = [ln for ln in p.stderr.strip().splitlines() if ln.strip()]
        assert len(lines) == 1 and lines[0].startswith("error:"), p.stderr
        assert "Traceback" not in p.stderr


def test_verified_delta_is_not_rehashed_and_a_changed_one_is_never_applied(bundle_copy, monkeypatch):
    from edgetool.runtime.bundle import reader as bundle_mod
    from edgetool.runtime.backends.base import BASE
    from edgetool.runtime.backends.ort import OrtBackend
    from edgetool.runtime.errors import SwitchError

    monkeypatch.setattr(bundle_mod, "RACY_NS", 3 * 10**8)  # the copy is settled 0.3 s after it was written
    time.sleep(0.4)
    hashed = []
    real = bundle_mod.sha256_bytes
    monkeypatch.setattr(bundle_mod, "sha256_bytes", lambda data: hashed.append(len(data)) or real(data))
    b = bundle_mod.Bundle.open(bundle_copy)
    be = OrtBackend(b, threads=1)
    x = b.samples()[:2]
    be.switch(0)
    served = be.infer(x)
    be.switch(BASE)
    base_logits = be.infer(x)
    n = len(hashed)
    be.switch(0)  # verified before and unchanged: read and decoded, not hashed
    assert len(hashed) == n and np.array_equal(be.infer(x), served)
    path = os.path.join(bundle_copy, b.deltas[0]["file"])
    be.switch(BASE)
    with open(path, "r+b") as f:  # same size, one byte flipped, in place
        f.seek(os.path.getsize(path) // 2)
        byte = f.read(1)
        f.seek(-1, 1)
        f.write(bytes([byte[0] ^ 0xFF]))
    with pytest.raises(SwitchError, match="sha256 mismatch"):
        be.switch(0)
    assert be.current == BASE and np.array_equal(be.infer(x), base_logits)
    with open(path, "r+b") as f:  # restored, then replaced by a renamed copy: hashed again, served again
        f.seek(os.path.getsize(path) // 2)
        f.write(byte)
    shutil.copyfile(path, path + ".new")
    os.replace(path + ".new", path)
    n = len(hashed)
    be.switch(0)
    assert len(hashed) > n and np.array_equal(be.infer(x), served)
