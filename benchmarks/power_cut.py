#!/usr/bin/env python
"""The table of power-cut points on the device side of deploy, and what each left behind.

Runs tests/runtime/deploy/test_power_cut.py, which kills `edgetool target ...` with SIGKILL at
each point (EDGETOOL_FAULT_KILL) during `deploy --to DIR` and `rollback --to DIR`, checks that
`status` is consistent and `current` is one whole verified version, then re-runs the command.
Its "rollout" table: SIGTERM to a three-host `deploy` while the first host is at each of eight
device-side points (EDGETOOL_FAULT_SIGNAL_PARENT); the --report must agree with every host's disk,
and the same command then completes everywhere.  Its "update " points: SIGKILL while the device
applies an update bundle (receiving it, after its signature, decoding the base delta, building and
verifying the full bundle, the move and the switch); the base or the whole new version serves, and
the same deploy then completes.

Usage: python benchmarks/power_cut.py   ->  benchmarks/results/power_cut.json
"""

import argparse
import json
import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))

from common import RESULTS, write_result  # noqa: E402


def main():
    argparse.ArgumentParser(description=__doc__.splitlines()[0]).parse_args()
    from edgetool.runtime.machine import machine_name

    out = os.path.join(RESULTS, "power_cut.json")
    tmp = out + ".points"
    env = dict(os.environ, EDGETOOL_POWER_CUT_TABLE=tmp)
    t0 = time.time()
    test = os.path.join(os.path.dirname(HERE), "tests", "runtime", "deploy", "test_power_cut.py")
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:randomly", test], env=env)
    with open(tmp) as f:
        table = json.load(f)
    os.remove(tmp)
    table.update(
        machine=machine_name(),
        passed=proc.returncode == 0,
        seconds=time.time() - t0,
        check="after each cut: status consistent, current one whole verified version; then the same command again",
    )
    write_result(out, table)
    sys.exit(proc.returncode)


if __name__ == "__main__":
    main()
