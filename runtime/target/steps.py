"""Optional steps after a switch, on the device: ``engine build`` and ``doctor``; roll back if one fails."""

from __future__ import annotations

import subprocess
import sys
from typing import Dict, List, Optional

from ..errors import DeployError
from ..files import fault_point


def _last_line(*texts: str) -> str:
    for text in texts:
        lines = [ln.strip() for ln in (text or "").splitlines() if ln.strip()]
        if lines:
            return lines[-1][:400]
    return ""


def run_steps(
    target, version: str, engine_profile: Optional[str] = None, doctor: bool = False, timeout: float = 3600.0
) -> Dict:
    """Run the requested steps on ROOT/current; on the first failure switch back and raise DeployError."""
    edgetool = [sys.executable, "-I", "-m", "edgetool"]  # isolated from the working folder
    current = target.p("current")
    plan = []
    if engine_profile:
        plan.append(("engine build", ["engine", "build", current, "--device-profile", engine_profile]))
    if doctor:
        plan.append(("doctor", ["doctor", current]))
    done: List[Dict] = []
    for name, args in plan:
        fault_point("target:step:{}".format(name.replace(" ", "-")))
        try:
            proc = subprocess.run(
                edgetool + args,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                universal_newlines=True,
                timeout=timeout,
            )
            ok, detail = (
                proc.returncode == 0,
                _last_line(proc.stderr, proc.stdout) if proc.returncode else _last_line(proc.stdout),
            )
        except subprocess.TimeoutExpired:
            ok, detail = False, "timed out after {:.0f} s".format(timeout)
        if name == "doctor":
            target.record_check(version, "doctor", ok, detail)
        done.append({"step": name, "ok": ok, "detail": detail})
        if not ok:
            back = _fall_back(target, version, name)
            raise DeployError("{} failed on version {} ({}); {}".format(name, version, detail, back))
    return {"steps": done}


def _fall_back(target, version: str, step: str) -> str:
    previous = target.state().get("previous")
    if previous and previous != version:
        target.rollback(previous, reason="auto-rollback: {} failed".format(step))
        return "rolled back to {}".format(previous)
    target.unlink_current("auto-rollback: {} failed".format(step))
    return "no previous version: current link removed"
