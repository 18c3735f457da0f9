"""What the camera loop serves: one bundle (``edgetool camera``), or the version a deploy root's
``current`` link points to, followed across deploys and rollbacks (``edgetool serve``).

A follower looks at ``ROOT/current`` between batches of frames.  When it points elsewhere, the
new version is loaded beside the old one (bundle, backend, classifier) and the loop swaps to it
before its next frame; the old one is then closed.  A version that fails to load is logged once
and the old one keeps serving.  ``ROOT/serving.json`` names the version being served, for
``edgetool status``; it is removed when the loop ends.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any, Callable, Optional

from ..errors import EdgetoolError, UsageError
from ..files import write_json_atomic

SERVING = "serving.json"


class Served:
    """One bundle, its backend and its stream classifier."""

    def __init__(self, path: str, backend: str, backend_kw: dict, clf_kw: dict, smoothing: float = 0.0):
        self.backend, self.backend_kw, self.clf_kw, self.smoothing = backend, backend_kw, clf_kw, smoothing
        self.bundle, self.be, self.clf, self.smoother = self._load(path)
        self.version: Optional[str] = None

    def _load(self, path: str):
        from ..cli import make_backend, open_bundle
        from .schedule import Smoother, StreamClassifier

        bundle = open_bundle(path)
        try:
            smoother = Smoother(bundle, self.smoothing)
            be = make_backend(bundle, self.backend, **self.backend_kw)
        except BaseException:
            bundle.close()
            raise
        try:
            return bundle, be, StreamClassifier(be, **self.clf_kw), smoother
        except BaseException:
            be.close()
            bundle.close()
            raise

    def poll(self, loop) -> None:
        """Between batches: nothing changes for one bundle."""

    def close(self) -> None:
        self.be.close()
        self.bundle.close()


def current_version(root: str) -> Optional[str]:
    """The version folder ``ROOT/current`` points to (None: nothing installed)."""
    link = os.path.join(root, "current")
    return os.path.basename(os.path.realpath(link)) if os.path.isdir(link) else None


class Follower(Served):
    """The version of deploy root *root* that ``current`` points to, swapped between frames."""

    def __init__(self, root: str, *args, check_every: float = 0.2, log: Callable[[str], None] = lambda m: None):
        version = current_version(root)
        if version is None:
            raise UsageError("{}: no version installed (ROOT/current); deploy one first".format(root))
        self.root, self.check_every, self.log = root, float(check_every), log
        super().__init__(os.path.join(root, "versions", version), *args)
        self.version, self._next = version, 0.0
        self.failed: Optional[str] = None  # a version that did not load (tried again once current moves on)
        self._write_serving()

    def poll(self, loop) -> None:
        if time.monotonic() < self._next:
            return
        self._next = time.monotonic() + self.check_every
        version = current_version(self.root)
        if version is None or version in (self.version, self.failed):
            return
        try:
            bundle, be, clf, smoother = self._load(os.path.join(self.root, "versions", version))
        except (EdgetoolError, OSError) as exc:
            self.failed = version  # tried once; a later change of current is tried again
            loop.error("cannot serve {}: {}; still serving {}".format(version, exc, self.version))
            return
        old: Any = (self.bundle, self.be)
        self.bundle, self.be, self.clf, self.smoother = bundle, be, clf, smoother
        self.log("serving {} (was {})".format(version, self.version))
        self.version, self.failed = version, None
        loop.swap(clf, bundle.input, version, smoother if smoother.active else None)
        old[1].close()
        old[0].close()
        self._write_serving()

    def _write_serving(self) -> None:
        record = {
            "version": self.version,
            "pid": os.getpid(),
            "since": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        write_json_atomic(os.path.join(self.root, SERVING), record)

    def close(self) -> None:
        super().close()
        path = os.path.join(self.root, SERVING)
        try:
            with open(path) as f:
                ours = json.load(f).get("pid") == os.getpid()
            if ours:
                os.remove(path)
        except (OSError, ValueError):
            pass


def serving(root: str) -> Optional[dict]:
    """What ``edgetool serve`` serves from *root* now (None: no serve process runs)."""
    try:
        with open(os.path.join(root, SERVING)) as f:
            record = json.load(f)
        os.kill(int(record["pid"]), 0)
    except PermissionError:  # another user's process: alive
        return record
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None
    return record
