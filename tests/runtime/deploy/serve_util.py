"""Shared by the serve tests (SSH deploys and Mender deployments): `edgetool serve` in the background, and
a short grey video for it to loop over."""

import json
import os
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest


def make_video(path):
    """20 frames of 28x28 grey noise, MJPG (OpenCV is needed: callers skip without it)."""
    import cv2

    w = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*"MJPG"), 30, (28, 28))
    rng = np.random.default_rng(0)
    for _ in range(20):
        w.write(cv2.cvtColor(rng.integers(0, 256, (28, 28), dtype=np.uint8), cv2.COLOR_GRAY2BGR))
    w.release()
    return path


class Served:
    """`edgetool serve` in the background, its JSON lines collected as they come."""

    def __init__(self, root, video):
        env = dict(os.environ, EDGETOOL_THREADS="1")
        args = [
            root,
            video,
            "--headless",
            "--json",
            "--input-loop",
            "-1",
            "--input-rate",
            "40",
            "--policy",
            "per-image",
        ]
        cmd = [sys.executable, "-m", "edgetool", "serve"] + [str(a) for a in args]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        self.rows, self.err = [], []
        self.threads = [
            threading.Thread(target=self._read, args=(self.proc.stdout, self.rows, True), daemon=True),
            threading.Thread(target=self._read, args=(self.proc.stderr, self.err, False), daemon=True),
        ]
        for t in self.threads:
            t.start()

    @staticmethod
    def _read(stream, into, as_json):
        for line in stream:
            into.append(json.loads(line) if as_json else line.rstrip("\n"))

    def wait_for(self, version, frames=10, timeout=120):
        """Until *frames* more frames came from *version*."""
        start, t0 = len(self.rows), time.monotonic()
        while time.monotonic() - t0 < timeout:
            if sum(r.get("version") == version for r in self.rows[start:]) >= frames:
                return
            assert self.proc.poll() is None, "\n".join(self.err)
            time.sleep(0.1)
        pytest.fail("no frames from {} within {} s: {}".format(version, timeout, "\n".join(self.err[-5:])))

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        rc = self.proc.wait(timeout=60)
        for t in self.threads:
            t.join(timeout=10)
        return rc

    def versions_in_order(self):
        """The versions that served the frames, each run of frames once (a swap falls between frames)."""
        frames = [r for r in self.rows if r["type"] == "frame"]
        swaps = [b["version"] for a, b in zip(frames, frames[1:]) if a["version"] != b["version"]]
        return [frames[0]["version"]] + swaps
