"""An install in the steps an update manager drives one at a time (Mender's Download, ArtifactInstall,
ArtifactCommit, ArtifactRollback and Cleanup), on the same deploy root and with the same checks as
``edgetool target install``, which runs them under one hold of the locks:

- :meth:`Phased.check` after a version was received into ``staging/``: the counter, the signature,
  every file and the release; a refused version is dropped, nothing else changes;
- :meth:`Phased.stage`: the same checks again under the lock that moves it into ``versions/``, beside
  ``current``, which is not switched;
- :meth:`Phased.switch`: the release against the counter as it is now, then the state and ``current``
  (state first, as every switch), then pruning;
- :meth:`Phased.withdraw`: undo a stage or a switch that did not complete: ``current`` back to the
  version that served before, and a copy this install placed and never served is removed;
- :meth:`Phased.drop_staged`: what was received and not staged.
"""

from __future__ import annotations

import os
import shutil
from typing import Dict, Optional

from ..errors import DeployError
from .fsutil import Lock
from .install import Target
from .state import check_version


class Phased(Target):
    """A deploy root whose installs run step by step."""

    def check(self, version: str) -> Dict:
        """Check the received VERSION in ``staging/`` (signature, every file, the anti-rollback counter);
        refused: dropped, and nothing else changed.  Returns the signer, the file count and the release."""
        check_version(version)
        self.init()
        with self.receiving(), Lock(self.p(".lock")):
            highest, lost = self.counter()
            if not os.path.isdir(self.p("staging", version)):
                raise DeployError("{}: nothing received for version {}".format(self.root, version))
            info = self._accept(version, highest, lost, False)
            info["release"] = self.release_of(self.p("staging", version))
        return info

    def stage(self, version: str) -> Dict:
        """Check VERSION again and move it into ``versions/``; ``current`` stays.  Returns the version
        current before and whether this call placed the copy (False: it was installed already)."""
        check_version(version)
        self.init()
        with self.receiving(), Lock(self.p(".lock")):
            highest, lost = self.counter()
            self.heal()
            current = self.current()
            st = self.state()
            if highest is not None and "highest_release" not in st:  # a new root: its counter is recorded
                st["highest_release"] = highest  # first, so a version placed beside no state is not a lost one
                self.save_state(st)
            if os.path.isdir(self.p("staging", version)):
                self._accept(version, highest, lost, False)
                placed = self._place(version)
            elif os.path.isdir(self.p("versions", version)):
                self._check_installed(version, highest, lost, False)
                placed = False
            else:
                raise DeployError("{}: nothing received for version {}".format(self.root, version))
        return {"version": version, "current": current, "placed": placed}

    def switch(self, version: str, keep: int = 3) -> Dict:
        """Make the staged VERSION current: its release is checked against the counter as it is now (an
        install of a newer release meanwhile refuses it), then the state, then ``current``."""
        check_version(version)
        with Lock(self.p(".lock")):
            highest, lost = self.counter()
            self.heal()
            if not os.path.isdir(self.p("versions", version)):
                raise DeployError("{}: version {} is not staged on this device".format(self.root, version))
            self._check_installed(version, highest, lost, False)
            info = self._commit(version, self.signer(version), highest, lost, False, keep)
        info["version"] = version
        return info

    def withdraw(self, version: str, was: Optional[str], placed: bool, reason: str) -> Dict:
        """Undo an install of VERSION that did not complete.  Where it became current (a switch cut
        after the state was written), ``current`` goes back to *was*, the version that served before
        (none: the link is removed, as after a failed first install); the copy is kept then, as the
        state's previous.  A copy this install *placed* and that never served is removed."""
        check_version(version)
        self.init()
        with self.receiving(), Lock(self.p(".lock")):
            self.heal()
            back = None
            served = self.current() == version
            if served and was != version:
                if was and os.path.isdir(self.p("versions", was)):
                    self._rollback(was, reason)
                    back = was
                else:
                    self.unlink_current(reason)
            removed = placed and not served and os.path.isdir(self.p("versions", version))
            if removed:
                shutil.rmtree(self.p("versions", version))
            if os.path.isdir(self.p("staging", version)):
                shutil.rmtree(self.p("staging", version))
        return {"version": version, "current": self.current(), "switched_back_to": back, "removed": removed}

    def drop_staged(self, version: str) -> bool:
        """Remove ``staging/VERSION`` (what was received for an install that did not go on)."""
        check_version(version)
        path = self.p("staging", version)
        if not os.path.isdir(path):
            return False
        with self.receiving():
            if os.path.isdir(path):
                shutil.rmtree(path)
        return True
