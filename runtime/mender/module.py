"""The Mender update module ``edgetool-bundle``: Mender's states on the device side of deploy.

The Mender client runs the module as ``MODULE STATE FILE_TREE`` (update module protocol v3).  Each
state maps onto the steps ``edgetool target`` runs for an SSH deploy, on the same deploy root:

- Download: the payload stream is received as ``edgetool target receive`` receives an upload
  (every file's size and sha256 checked) into ``staging/``, then checked: the signature against the
  trusted keys, every file against the signed manifest, the release against the anti-rollback
  counter, the artifact's version and release against the bundle, and the fit on the device
  profile.  A refusal drops what was received and fails the deployment with one ``error:`` line,
  which the client writes to its log;
- ArtifactInstall: the version is checked again and moved into ``versions/``; ``current`` stays;
- ArtifactCommit: the atomic switch of ``current`` (the state first), then pruning; ``edgetool
  serve`` follows it as after an SSH deploy;
- ArtifactRollback: ``current`` back to the version that served before, if the switch had begun;
  a copy this install placed and that never served is removed;
- Cleanup: what was received and not installed is removed.

SupportsRollback answers Yes and NeedsArtifactReboot No.  Other states have nothing to do.
What the module remembers between states (the version, the version serving before, whether it
placed the copy) lies in the file tree's ``tmp/``, which the client keeps until Cleanup.
"""

from __future__ import annotations

import json
import os
from typing import Dict, Optional

from ..errors import DeployError, EdgetoolError
from ..files import write_json_atomic
from ..target.phased import Phased
from ..target.state import check_version
from .artifact import PAYLOAD, RELEASE_KEY, TYPE, VERSION_KEY

ANSWERS = {"SupportsRollback": "Yes", "NeedsArtifactReboot": "No"}
RECORD = TYPE + ".json"
MAX_HEADER = 1 << 16


class UpdateModule:
    """One run of the module: STATE on FILE_TREE, for the deploy root *root* and device *profile*."""

    def __init__(self, tree: str, root: str, profile: Dict, keep: int = 3):
        self.tree = tree
        self.target = Phased(root)
        self.profile = profile
        self.keep = keep

    def run(self, state: str) -> Optional[str]:
        """Do STATE; returns its one line for the log (None: nothing to do).  The query states
        (:data:`ANSWERS`) are answered by the caller."""
        handler = {
            "Download": self.download,
            "ArtifactInstall": self.install,
            "ArtifactCommit": self.commit,
            "ArtifactRollback": self.rollback,
            "Cleanup": self.cleanup,
        }.get(state)
        return handler() if handler else None

    # -- the states --------------------------------------------------------------------------------------
    def download(self) -> str:
        version, release = self._provides()
        self._save({"version": version})
        name = self._next_stream()
        if name != "streams/" + PAYLOAD:
            raise DeployError(
                "the artifact's payload is {!r}, not {} (an artifact of type {} carries one bundle stream)".format(
                    name, PAYLOAD, TYPE
                )
            )
        with open(os.path.join(self.tree, name), "rb") as stream:
            got = self.target.receive_stream(version, stream)
            trailing = stream.read(1)
        if trailing or self._next_stream():
            self.target.drop_staged(version)
            raise DeployError("the artifact carries more than one bundle (bytes after the last file, or a second file)")
        info = self.target.check(version)
        try:
            fits = self._agree(version, release)
        except EdgetoolError:
            self.target.drop_staged(version)
            raise
        return "received {} ({} files), {}, release {}, fits: {}".format(
            version, len(got["received"]), _signed(info["signer"]), info["release"], fits
        )

    def install(self) -> str:
        rec = self._load()
        version = rec["version"]
        rec.update(was=self.target.current(), placed=not os.path.isdir(self.target.p("versions", version)))
        self._save(rec)  # before anything moves: a rollback knows what to undo whenever it comes
        self.target.stage(version)
        return "staged {} in {}; current is still {}".format(
            version, self.target.p("versions", version), rec["was"] or "none"
        )

    def commit(self) -> str:
        info = self.target.switch(self._load()["version"], self.keep)
        return "current -> {} (release {}; previous {})".format(
            info["version"], info["release"], info["previous"] or "none"
        )

    def rollback(self) -> str:
        rec = self._load(missing_ok=True)
        if not rec:
            return "nothing was received: nothing to roll back"
        res = self.target.withdraw(rec["version"], rec.get("was"), bool(rec.get("placed")), "rollback: mender")
        return "current {}{}{}".format(
            res["current"] or "none",
            " (switched back from {})".format(res["version"]) if res["switched_back_to"] else "",
            "; {} removed".format(res["version"]) if res["removed"] else "",
        )

    def cleanup(self) -> Optional[str]:
        rec = self._load(missing_ok=True)
        if rec and self.target.drop_staged(rec["version"]):
            return "removed what was received for {} and not installed".format(rec["version"])
        return None

    # -- helpers -----------------------------------------------------------------------------------------
    def _provides(self):
        """The version and release the artifact provides (header/type-info)."""
        path = os.path.join(self.tree, "header", "type-info")
        try:
            with open(path, "rb") as f:
                provides = json.loads(f.read(MAX_HEADER).decode("utf-8")).get("artifact_provides") or {}
        except (OSError, ValueError, UnicodeDecodeError, AttributeError) as exc:
            raise DeployError("{}: cannot read the artifact's type-info ({})".format(path, exc)) from None
        version, release = provides.get(VERSION_KEY), str(provides.get(RELEASE_KEY, ""))
        if not isinstance(version, str) or not release.isdigit():
            raise DeployError(
                "the artifact provides no {} and {} (write it with `edgetool mender artifact`)".format(
                    VERSION_KEY, RELEASE_KEY
                )
            )
        return check_version(version), int(release)

    def _agree(self, version: str, release: int) -> str:
        """The artifact's version and release are the bundle's own, and the bundle fits this device."""
        from ..bundle.reader import Bundle
        from ..deploy import fit
        from ..deploy.driver import Source

        with Bundle.open(self.target.p("staging", version)) as b:
            own = Source(b).version
            if own != version:
                raise DeployError(
                    "the artifact names version {} but its bundle is version {}; refused".format(version, own)
                )
            if b.model.release != release:
                said = "the artifact provides release {} but the bundle's signed manifest says release {}"
                raise DeployError(said.format(release, b.model.release) + "; refused")
            return fit.describe(fit.check(b, self.profile))

    def _next_stream(self) -> str:
        path = os.path.join(self.tree, "stream-next")
        try:
            with open(path, "rb") as f:
                return f.read(4097).decode("utf-8", "replace").strip()
        except OSError as exc:
            raise DeployError("{}: cannot read ({})".format(path, exc.strerror)) from None

    def _record(self) -> str:
        return os.path.join(self.tree, "tmp", RECORD)

    def _save(self, rec: Dict) -> None:
        os.makedirs(os.path.dirname(self._record()), exist_ok=True)
        write_json_atomic(self._record(), rec, sort_keys=True)

    def _load(self, missing_ok: bool = False) -> Dict:
        try:
            with open(self._record(), "rb") as f:
                rec = json.loads(f.read(MAX_HEADER).decode("utf-8"))
            check_version(rec["version"])
            return rec
        except FileNotFoundError:
            if missing_ok:
                return {}
            raise DeployError(
                "{}: missing (the Download state did not run for this deployment)".format(self._record())
            ) from None
        except (OSError, ValueError, UnicodeDecodeError, KeyError, TypeError, EdgetoolError):
            raise DeployError("{}: not this module's record".format(self._record())) from None


def _signed(signer: Optional[str]) -> str:
    return "unsigned (accepted here)" if signer is None else "signed by key {}".format(signer)
