"""Deploy over a real OpenSSH server on 127.0.0.1 (a temp host key, authorized_keys and known_hosts)."""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time

import pytest

from conftest import run_cli
from deploy_fixtures import deploy_kit_fixture, edgetool_cmd, snapshot, version_of  # noqa: F401  (fixture)

SSHD_CONFIG = """Port {port}
ListenAddress 127.0.0.1
HostKey {d}/host_ed25519
AuthorizedKeysFile {d}/authorized_keys
PidFile {d}/sshd.pid
PasswordAuthentication no
KbdInteractiveAuthentication no
PubkeyAuthentication yes
PermitRootLogin prohibit-password
StrictModes no
UsePAM no
LogLevel ERROR
"""


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _sshd_binary():
    for p in (shutil.which("sshd"), "/usr/sbin/sshd"):
        if p and os.access(p, os.X_OK):
            return p
    return None


@pytest.fixture(scope="module")
def sshd(tmp_path_factory):
    """A real sshd as the current user; skips (with the reason) where it cannot start."""
    binary = _sshd_binary()
    if binary is None or not shutil.which("ssh") or not shutil.which("ssh-keygen"):
        pytest.skip("OpenSSH server/client not installed (apt-get install openssh-server openssh-client)")
    if os.geteuid() == 0 and not os.path.isdir("/run/sshd"):
        try:
            os.makedirs("/run/sshd", mode=0o755)  # sshd's privilege-separation directory
        except OSError as exc:
            pytest.skip("sshd needs /run/sshd: {}".format(exc))
    d = tmp_path_factory.mktemp("sshd")
    for name in ("host_ed25519", "client_ed25519"):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(d / name)], check=True)
    shutil.copy(d / "client_ed25519.pub", d / "authorized_keys")
    port = free_port()
    (d / "sshd_config").write_text(SSHD_CONFIG.format(port=port, d=d))
    proc = subprocess.Popen([binary, "-D", "-e", "-f", str(d / "sshd_config")], stderr=subprocess.PIPE)
    host_pub = (d / "host_ed25519.pub").read_text().split()
    (d / "known_hosts").write_text("[127.0.0.1]:{} {} {}\n".format(port, host_pub[0], host_pub[1]))
    (d / "empty_known_hosts").write_text("")
    user = os.environ.get("USER") or __import__("pwd").getpwuid(os.geteuid()).pw_name
    s = {
        "dir": d,
        "port": port,
        "user": user,
        "host": "{}@127.0.0.1".format(user),
        "args": [
            "--port",
            str(port),
            "--identity",
            str(d / "client_ed25519"),
            "--known-hosts",
            str(d / "known_hosts"),
            "--remote-edgetool",
            edgetool_cmd(),
        ],
    }
    _wait_for_login(proc, d, port, s["host"])
    yield s
    proc.terminate()
    proc.wait(timeout=10)


def _wait_for_login(proc, d, port, host):
    """Until a key login to *host* works; skips (killing sshd) when sshd exits or 10 s pass without one."""
    deadline = time.time() + 10
    while time.time() < deadline:
        if proc.poll() is not None:
            pytest.skip("sshd could not start: {}".format(proc.stderr.read().decode(errors="replace").strip()[-300:]))
        probe = subprocess.run(
            [
                "ssh",
                "-p",
                str(port),
                "-i",
                str(d / "client_ed25519"),
                "-o",
                "BatchMode=yes",
                "-o",
                "UserKnownHostsFile=" + str(d / "known_hosts"),
                "-o",
                "IdentitiesOnly=yes",
                "-o",
                "StrictHostKeyChecking=yes",
                "--",
                host,
                "true",
            ],
            capture_output=True,
        )
        if probe.returncode == 0:
            break
        time.sleep(0.3)
    else:
        proc.kill()
        pytest.skip("sshd did not accept a login: {}".format(probe.stderr.decode(errors="replace").strip()[-300:]))


def ssh_cli(sshd, command, *args, host=None):
    proc = run_cli(command, *args, "--host", host or sshd["host"], *sshd["args"])
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc


def remote_status(sshd, root):
    proc = ssh_cli(sshd, "status", "--root", root, "--json")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.fixture()
def root(deploy_kit, tmp_path):
    r = tmp_path / "device"
    assert run_cli("target", "trust", r, deploy_kit["keys"]["good"]["public"]).returncode == 0
    return r


def test_ssh_deploy_status_rollback(sshd, deploy_kit, root):
    v1, v2 = version_of(deploy_kit["v1"]), version_of(deploy_kit["v2"])
    for bundle in ("v1", "v2"):
        proc = ssh_cli(sshd, "deploy", deploy_kit[bundle], "--device-profile", "orin-nano", "--root", root)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert "uploading" in proc.stderr and "100%" in proc.stderr  # upload progress
    st = remote_status(sshd, root)
    assert st["current"] == v2 and st["previous"] == v1 and st["versions"] == sorted([v1, v2])
    proc = ssh_cli(sshd, "rollback", "--root", root)
    assert proc.returncode == 0 and "current {} (was {})".format(v1, v2) in proc.stdout, proc.stdout + proc.stderr
    assert remote_status(sshd, root)["current"] == v1
    assert os.path.realpath(root / "current") == str(root / "versions" / v1)


def test_ssh_refuses_unknown_host_key_and_reports_each_host(sshd, deploy_kit, root):
    args = [
        a if a != str(sshd["dir"] / "known_hosts") else str(sshd["dir"] / "empty_known_hosts") for a in sshd["args"]
    ]
    proc = run_cli("deploy", deploy_kit["v1"], "--device-profile", "cpu", "--root", root, "--host", sshd["host"], *args)
    assert proc.returncode != 0 and "Host key verification failed" in proc.stdout, proc.stdout
    assert snapshot(str(root))[0] is None
    # several hosts in parallel: one good, one with nothing listening; per-host summary, non-zero exit
    config = sshd["dir"] / "ssh_config"
    config.write_text(
        "Host good\n  HostName 127.0.0.1\n  Port {}\nHost dead\n  HostName 127.0.0.1\n  Port {}\n".format(
            sshd["port"], free_port()
        )
    )
    good, dead = "{}@good".format(sshd["user"]), "{}@dead".format(sshd["user"])
    proc = run_cli(
        "deploy",
        deploy_kit["v1"],
        "--device-profile",
        "cpu",
        "--root",
        root,
        "--host",
        good,
        "--host",
        dead,
        "--ssh-config",
        config,
        *sshd["args"][2:],
    )
    assert proc.returncode != 0
    lines = proc.stdout.splitlines()
    assert any(ln.startswith(good) and " ok " in ln for ln in lines), proc.stdout
    assert any(ln.startswith(dead) and "FAILED" in ln for ln in lines), proc.stdout
    assert "2 host(s): 1 ok, 1 failed" in proc.stdout


def test_hostile_host_and_path_names_run_nothing(sshd, deploy_kit, tmp_path):
    marker = tmp_path / "pwned"
    hostile_root = tmp_path / "dev $(touch {m}) `touch {m}`; touch {m} 'q' \"dq\" *".format(m=marker)
    assert run_cli("target", "trust", hostile_root, deploy_kit["keys"]["good"]["public"]).returncode == 0
    proc = ssh_cli(sshd, "deploy", deploy_kit["v1"], "--device-profile", "cpu", "--root", hostile_root)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert os.path.islink(os.path.join(str(hostile_root), "current")) and not marker.exists()
    assert remote_status(sshd, hostile_root)["current"] == version_of(deploy_kit["v1"])
    for host in (
        "-oProxyCommand=touch {}".format(marker),
        "{}@127.0.0.1;touch {}".format(sshd["user"], marker),
        "$(touch {})".format(marker),
        "a b",
    ):
        proc = ssh_cli(sshd, "deploy", deploy_kit["v1"], "--device-profile", "cpu", "--root", tmp_path / "x", host=host)
        assert proc.returncode == 2 and "invalid host" in proc.stderr, proc.stderr
    assert not marker.exists() and not (tmp_path / "x").exists()


def test_transfer_killed_midway_keeps_previous_and_rerun_completes(sshd, deploy_kit, root):
    v1, v2 = version_of(deploy_kit["v1"]), version_of(deploy_kit["v2"])
    assert ssh_cli(sshd, "deploy", deploy_kit["v1"], "--device-profile", "cpu", "--root", root).returncode == 0
    cmd = [
        sys.executable,
        "-m",
        "edgetool",
        "deploy",
        deploy_kit["v2"],
        "--device-profile",
        "cpu",
        "--root",
        str(root),
        "--bwlimit",
        "16",
        "--host",
        sshd["host"],
    ] + sshd["args"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    staging = root / "staging" / v2
    deadline = time.time() + 120
    while time.time() < deadline and not (staging / "base.onnx.part").exists():
        time.sleep(0.05)
    time.sleep(0.5)
    assert proc.poll() is None, "the throttled upload finished before it could be interrupted"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert os.path.exists(staging / "manifest.json") and not os.path.exists(staging / "deltas")
    assert os.path.realpath(root / "current") == str(root / "versions" / v1)
    proc = ssh_cli(sshd, "deploy", deploy_kit["v2"], "--device-profile", "cpu", "--root", root)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    st = remote_status(sshd, root)
    assert st["current"] == v2 and st["previous"] == v1 and st["staging"] == []


def test_ssh_trusts_keys_by_content_and_refuses_a_lost_counter(sshd, deploy_kit, tmp_path):
    """A key trusted as release.pub is trusted by both sides; a counter that is not a number stops
    the deploy with one line (it used to trace back on the workstation), until reset-counter."""
    root = tmp_path / "device"
    (root / "trust").mkdir(parents=True)
    shutil.copy(deploy_kit["keys"]["good"]["public"], str(root / "trust" / "release.pub"))
    proc = ssh_cli(sshd, "deploy", deploy_kit["v1"], "--device-profile", "cpu", "--root", root)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert remote_status(sshd, root)["trusted_keys"] == [deploy_kit["keys"]["good"]["key_id"]]
    state = json.loads((root / "state.json").read_text())
    state["highest_release"] = "20"
    (root / "state.json").write_text(json.dumps(state))
    before = snapshot(str(root))
    proc = ssh_cli(sshd, "deploy", deploy_kit["v2"], "--device-profile", "cpu", "--root", root)
    assert proc.returncode != 0 and proc.stderr.count("error: ") == 1, proc.stdout + proc.stderr
    assert "anti-rollback counter" in proc.stdout and "reset-counter" in proc.stdout, proc.stdout
    assert snapshot(str(root)) == before and os.listdir(root / "staging") == []
    proc = ssh_cli(sshd, "status", "--root", root)
    assert "anti-rollback counter unknown" in proc.stdout, proc.stdout
    assert run_cli("target", "reset-counter", root).returncode == 0
    proc = ssh_cli(sshd, "deploy", deploy_kit["v2"], "--device-profile", "cpu", "--root", root)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_ssh_sigterm_mid_upload_stops_cleanly_with_a_report(sshd, deploy_kit, root, tmp_path):
    """SIGTERM to deploy while it uploads over ssh: the upload ends at once (the device drops the
    file in transfer), nothing switches, the summary and --report name the host as stopped, 143."""
    v1, v2 = version_of(deploy_kit["v1"]), version_of(deploy_kit["v2"])
    assert ssh_cli(sshd, "deploy", deploy_kit["v1"], "--device-profile", "cpu", "--root", root).returncode == 0
    report = tmp_path / "report.jsonl"
    cmd = [sys.executable, "-m", "edgetool", "deploy", deploy_kit["v2"], "--device-profile", "cpu"]
    cmd += ["--root", str(root), "--bwlimit", "16", "--report", str(report), "--host", sshd["host"]] + sshd["args"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    staging = root / "staging" / v2
    deadline = time.time() + 120
    while time.time() < deadline and not (staging / "base.onnx.part").exists():
        time.sleep(0.05)
    assert proc.poll() is None, "the throttled upload finished before the signal"
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signal.SIGTERM and "Traceback" not in err, out + err
    assert "1 host(s): 0 ok, 0 failed, 1 stopped" in out, out
    rec = json.loads(report.read_text())
    assert rec["result"] == "stopped" and "during its upload" in rec["error"], rec
    deadline = time.time() + 10  # the device side ends on the end of its input
    while time.time() < deadline and (staging / "base.onnx.part").exists():
        time.sleep(0.1)
    assert not (staging / "base.onnx.part").exists() and (staging / "manifest.json").exists()
    assert os.path.realpath(root / "current") == str(root / "versions" / v1)
    assert ssh_cli(sshd, "deploy", deploy_kit["v2"], "--device-profile", "cpu", "--root", root).returncode == 0
    assert remote_status(sshd, root)["current"] == v2
