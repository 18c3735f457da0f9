"""Jetson telemetry from tegrastats: the lines of every board generation, the profile's Jetson
block from a fake tegrastats, and its output as untrusted input (binary, impossible figures, a
line without end)."""

import json
import os
import subprocess
import sys
import time

import pytest

from conftest import run_cli


LINES = {  # tegrastats lines in the format each board and JetPack prints: board -> (line, input rail, its mW)
    "nano-jp4": (
        "RAM 2038/3964MB (lfb 76x4MB) SWAP 0/1982MB (cached 0MB) IRAM 0/252kB(lfb 252kB) "
        "CPU [13%@1479,9%@1479,7%@1479,4%@1479] EMC_FREQ 7%@1600 GR3D_FREQ 0%@921 APE 25 PLL@33C CPU@36C "
        "PMIC@100C GPU@34C AO@43C thermal@35C POM_5V_IN 2151/2151 POM_5V_GPU 41/41 POM_5V_CPU 337/337",
        "POM_5V_IN",
        2151,
    ),
    "tx2-jp4": (
        "RAM 1903/7854MB (lfb 1041x4MB) SWAP 0/3927MB (cached 0MB) CPU [0%@2035,off,off,0%@2034,0%@2035,0%@2035] "
        "EMC_FREQ 0%@1866 GR3D_FREQ 0%@1300 APE 150 PLL@38C MCPU@38C PMIC@100C Tboard@34C GPU@36C BCPU@38C "
        "thermal@37.3C Tdiode@35.25C VDD_SYS_GPU 152/152 VDD_SYS_SOC 686/686 VDD_4V0_WIFI 0/0 VDD_IN 3130/3130 "
        "VDD_SYS_CPU 152/152 VDD_SYS_DDR 421/421",
        "VDD_IN",
        3130,
    ),
    "xavier-agx-jp4": (
        "RAM 1512/15827MB (lfb 3321x4MB) SWAP 0/7914MB (cached 0MB) CPU [1%@1190,0%@1190,off,off,off,off,off,off] "
        "EMC_FREQ 0%@2133 GR3D_FREQ 0%@1377 APE 150 MTS fg 0% bg 0% AO@35.5C GPU@35C Tdiode@38C PMIC@100C "
        "AUX@34.5C CPU@36.5C thermal@35.15C Tboard@35C GPU 0/0 CPU 311/311 SOC 1243/1243 CV 0/0 VDDRQ 155/155 "
        "SYS5V 1528/1528",
        "SYS5V",
        1528,
    ),
    "orin-agx-jp5": (
        "RAM 3142/30536MB (lfb 6696x4MB) SWAP 0/15268MB (cached 0MB) CPU [1%@729,0%@729,0%@729,0%@729] "
        "EMC_FREQ 0%@2133 GR3D_FREQ 0%@[0,0] VIC_FREQ 729 APE 174 CV0@-256C CPU@47.25C SOC2@44.375C "
        "VDD_GPU_SOC 2380mW/2380mW VDD_CPU_CV 397mW/397mW VIN_SYS_5V0 2720mW/2720mW VDDQ_VDD2_1V8AO 302mW/302mW",
        "VIN_SYS_5V0",
        2720,
    ),
    "orin-nano-jp6": (
        "RAM 2448/7620MB (lfb 1x4MB) SWAP 0/3810MB (cached 0MB) CPU [2%@729,1%@729,off,off,0%@729,0%@729] "
        "EMC_FREQ 3%@2133 GR3D_FREQ 41%@[305] NVENC off NVDEC off NVJPG off VIC off OFA off APE 200 "
        "cpu@46.5C soc2@45C VDD_IN 4936mW/4936mW VDD_CPU_GPU_CV 718mW/718mW VDD_SOC 1475mW/1475mW",
        "VDD_IN",
        4936,
    ),
}


@pytest.mark.parametrize("board", sorted(LINES))
def test_tegrastats_lines_of_every_jetson_generation(board):
    from edgetool.runtime.profile.tegrastats import parse, summarize

    line, rail, mw = LINES[board]
    got = parse(line)
    assert got["ram_total_mb"] > got["ram_used_mb"] > 0 and "emc_load_percent" in got and "gr3d_load_percent" in got
    assert got["power_mw"][rail] == {"now_mw": mw, "avg_mw": mw}
    assert not any(k in got["power_mw"] for k in ("RAM", "SWAP", "IRAM", "APE", "CPU@36C", "VIC_FREQ"))
    s = summarize([got, got], 1.0)
    assert s["total_power"] == {"mw": mw, "from": rail} and s["samples"] == 2


def test_profile_reports_jetson_telemetry_from_tegrastats(tiny_bundle, tmp_path):
    line = LINES["orin-nano-jp6"][0]
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "tegrastats"
    fake.write_text('#!/bin/sh\nwhile true; do echo "{}"; sleep 0.05; done\n'.format(line))
    fake.chmod(0o755)
    out = tmp_path / "p"
    args = ["profile", tiny_bundle, "--out", out, "--iterations", "3", "--warmup", "0", "--batch", "4"]
    args += ["--modes", "one-engine", "--policies", "per-image", "--no-memory", "--threads", "1"]
    p = run_cli(*args, env={"PATH": "{}:{}".format(bin_dir, os.environ["PATH"])}, timeout=900)
    assert p.returncode == 0, p.stderr
    with open(out / "profile.json") as f:
        j = json.load(f)["jetson"]
    t = j["tegrastats"]
    assert j["available"] and t["samples"] >= 1 and t["total_power"] == {"mw": 4936, "from": "VDD_IN"}
    assert t["gr3d_load_percent"] == 41 and t["ram_used_mb"] == 2448
    ips = json.load(open(out / "profile.json"))["throughput"]["two_stage_images_per_s"]
    assert j["energy_mj_per_image"] == pytest.approx(4936 / ips)
    md = (out / "profile.md").read_text()
    assert "board 4936 mW (VDD_IN)" in md and "{:.2f} mJ per image".format(4936 / ips) in md


def fake_tegrastats(bin_dir, body):
    """A `tegrastats` on PATH that runs the shell *body* (its --interval argument ignored)."""
    bin_dir.mkdir(exist_ok=True)
    fake = bin_dir / "tegrastats"
    fake.write_text("#!/bin/sh\n" + body + "\n")
    fake.chmod(0o755)
    return "{}:{}".format(bin_dir, os.environ["PATH"])


IMPOSSIBLE = "RAM 10000000000000000000000/0MB (lfb 1x4MB) EMC_FREQ 999%@2133 GR3D_FREQ 41%@[305] VDD_IN 4936mW/4936mW"
GOOD = LINES["orin-nano-jp6"][0]


def sample(monkeypatch, path, seconds=1.0):
    """Run the Sampler for *seconds* with PATH; returns it and what a reader thread raised."""
    import threading

    from edgetool.runtime.profile.tegrastats import Sampler

    raised = []
    monkeypatch.setattr(threading, "excepthook", lambda args: raised.append(args.exc_value))
    monkeypatch.setenv("PATH", path)
    with Sampler(interval_ms=50) as t:
        time.sleep(seconds)
    return t, raised


def test_tegrastats_binary_output_is_rejected_not_a_crash(monkeypatch, tmp_path):
    body = "while true; do printf '\\377\\376RAM \\200\\201 garbage\\n'; sleep 0.05; done"
    t, raised = sample(monkeypatch, fake_tegrastats(tmp_path / "bin", body))
    assert raised == []
    assert t.result is not None and "none a measurement (not text)" in t.result["reason"], t.result


def test_tegrastats_impossible_figures_are_not_measurements(monkeypatch, tmp_path):
    body = 'while true; do echo "{}"; sleep 0.05; done'.format(IMPOSSIBLE)
    t, _ = sample(monkeypatch, fake_tegrastats(tmp_path / "bin", body))
    assert "samples" not in t.result and "impossible figures: RAM" in t.result["reason"], t.result
    body = 'while true; do echo "{}"; echo "{}"; sleep 0.05; done'.format(GOOD, IMPOSSIBLE.replace("RAM 1", "RAM 9"))
    t, _ = sample(monkeypatch, fake_tegrastats(tmp_path / "bin2", body))
    assert t.result["samples"] >= 1 and t.result["ram_used_mb"] == 2448 and t.result["emc_load_percent"] == 3
    assert t.result["rejected_lines"] >= 1 and "impossible" in t.result["rejected_because"]
    from edgetool.runtime.profile.tegrastats import Implausible, parse

    for bad in ("EMC_FREQ 101%@2133", "GR3D_FREQ 250%@[305]", "RAM 9/8MB", "VDD_IN 5000000mW/5000000mW"):
        with pytest.raises(Implausible):
            parse(bad)


READ_ENDLESS_LINE = """
import os, resource, sys, time
from edgetool.runtime.profile.tegrastats import Sampler
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
with Sampler() as t:
    time.sleep(float(sys.argv[1]))
grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
print(grown // 1024, t.result)
"""


def test_tegrastats_line_without_end_keeps_memory_bounded(tmp_path):
    """400 MB without a newline: the reader keeps at most one line's bound, and says so."""
    path = fake_tegrastats(tmp_path / "bin", "head -c 400000000 /dev/zero | tr '\\\\0' x; sleep 30")
    proc = subprocess.run(
        [sys.executable, "-c", READ_ENDLESS_LINE, "6"],
        capture_output=True,
        text=True,
        timeout=120,
        env=dict(os.environ, PATH=path),
    )
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr
    grown_mb, result = proc.stdout.split(" ", 1)
    assert int(grown_mb) < 64, proc.stdout
    assert "a line over 65536 bytes" in result and "printed nothing" not in result, result


def test_profile_with_a_broken_tegrastats_reports_no_figures(tiny_bundle, tmp_path):
    body = "while true; do printf '\\377\\376\\n'; echo \"{}\"; sleep 0.05; done".format(IMPOSSIBLE)
    path = fake_tegrastats(tmp_path / "bin", body)
    out = tmp_path / "p"
    args = ["profile", tiny_bundle, "--out", out, "--iterations", "3", "--warmup", "0", "--batch", "4"]
    args += ["--modes", "one-engine", "--policies", "per-image", "--no-memory", "--threads", "1"]
    p = run_cli(*args, env={"PATH": path}, timeout=900)
    assert p.returncode == 0, p.stderr
    assert "Traceback" not in p.stderr and "Exception in thread" not in p.stderr, p.stderr
    j = json.loads((out / "profile.json").read_text())["jetson"]
    assert "none a measurement" in j["tegrastats"]["reason"] and "energy_mj_per_image" not in j, j
    assert "ram_used_mb" not in j["tegrastats"]
    assert "RAM 10000000000000000000000 /" not in (out / "profile.md").read_text()
