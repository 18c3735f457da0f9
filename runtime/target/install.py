"""The device side of a deploy: verify what was received, check its release, switch ``current``
atomically (the state first), keep the previous, prune, roll back.  The root's folders and state
are :mod:`.state`; receiving is :mod:`.receive`.
"""

from __future__ import annotations

import os
import re
import shutil
from typing import Any, Dict, Optional

from ..errors import DeployError, EdgetoolError, UsageError
from ..files import fault_point
from ..files import fsync_dir, write_bytes_atomic
from .fsutil import Lock, atomic_json, atomic_symlink
from .receive import CHUNK, MAX_FILE, Receiver, check_rel
from .state import VERSION_RE, DeviceRoot, check_version, now
from .update import APPLY, build, staged_update

__all__ = ["Target", "DeviceRoot", "check_version", "check_rel", "now", "CHUNK", "MAX_FILE"]


class Target(Receiver):
    """A deploy root: receive (:class:`.receive.Receiver`), install, switch, roll back."""

    def set_config(self, **kw) -> Dict:
        self.init()
        with Lock(self.p(".lock")):
            cfg = dict(self.config(), **kw)
            atomic_json(self.p("config.json"), cfg)
        return cfg

    def trust(self, pub_path: str) -> str:
        """Trust the Ed25519 key in PUB_PATH; it is stored as ``trust/<key id>.pub``, canonical PEM."""
        from ..bundle.signature import canonical_pem, load_public, raw_bytes, raw_key_id

        raw = raw_bytes(load_public(pub_path))  # any form the crypto library reads, or one error line
        kid = raw_key_id(raw)
        self.init()
        with Lock(self.p(".lock")):
            write_bytes_atomic(self.p("trust", kid + ".pub"), canonical_pem(raw))
        return kid

    def untrust(self, kid: str) -> Dict:
        """Revoke key *kid*: every ``*.pub`` in ``trust/`` that holds it (whatever its name) is
        removed, so bundles it signed are refused from now on (installed ones stay)."""
        from ..bundle.signature import trust_store

        if not re.match(r"^[0-9a-f]{16}$", kid or ""):
            raise UsageError("invalid key id {!r} (16 hex digits, as `edgetool target status` lists them)".format(kid))
        self.init()
        with Lock(self.p(".lock")):
            store = trust_store(self.p("trust"))
            if kid not in store:
                raise UsageError(
                    "{}: key {} is not trusted here (trusted: {})".format(self.root, kid, ", ".join(store) or "none")
                )
            files = store[kid]["files"]
            for path in files:
                os.remove(path)
            fsync_dir(self.p("trust"))
            if kid in trust_store(self.p("trust")):  # a copy appeared meanwhile: never claim it is gone
                raise DeployError(
                    "{}: key {} is still trusted by another file; untrust it again".format(self.root, kid)
                )
        return {"key_id": kid, "removed": [os.path.basename(p) for p in files]}

    def verify_staged(self, version: str) -> Dict:
        """Signature first, then every file against the manifest; nothing is moved on failure."""
        from ..bundle.reader import Bundle
        from ..bundle.signature import verify_bundle

        staging = self.p("staging", version)
        signer = verify_bundle(staging, self.p("trust"), bool(self.config().get("accept_unsigned")))
        fault_point("target:verify:signed")
        update = staged_update(staging)
        if update is not None:  # its files are checked as the update is applied (_apply_staged)
            return {"signer": signer, "files": len(update.files()) + 1}
        b = Bundle.open(staging)
        try:
            return {"signer": signer, "files": len(b.files()) + 1}
        finally:
            b.close()

    def install(self, version: str, keep: int = 3, allow_downgrade: bool = False) -> Dict:
        """Check the staged VERSION, move it into ``versions/`` and switch ``current`` to it, under one
        hold of the locks (the three steps an update manager drives one by one: :mod:`.phased`)."""
        check_version(version)
        self.init()
        with self.receiving(), Lock(self.p(".lock")):  # no upload writes into staging/ meanwhile
            fault_point("target:install:locked")
            highest, lost = self.counter()  # an unusable state stops it before any change
            self.heal()
            info: Dict[str, Any] = {"version": version, "signer": None, "files": 0}
            if os.path.isdir(self.p("staging", version)):
                info.update(self._accept(version, highest, lost, allow_downgrade))
                self._place(version, info)
            elif not os.path.isdir(self.p("versions", version)):
                raise DeployError("{}: nothing staged for version {}".format(self.root, version))
            else:
                self._check_installed(version, highest, lost, allow_downgrade)
            info.update(self._commit(version, info["signer"], highest, lost, allow_downgrade, keep))
        return info

    def _accept(self, version: str, highest: Optional[int], lost: Optional[str], allow_downgrade: bool) -> Dict:
        """The staged VERSION checked where it lies: the counter, the signature, every file, the release.
        A refused version is dropped from ``staging/``; nothing else changes.  The locks are held."""
        staged = self.p("staging", version)
        try:
            if lost and not allow_downgrade:
                raise self.counter_refusal(lost)
            info = self.verify_staged(version)
            fault_point("target:install:verified")
            self._check_release(staged, highest, allow_downgrade)
        except EdgetoolError:
            shutil.rmtree(staged)  # refused: drop what was received, change nothing else
            raise
        return info

    def _place(self, version: str, info: Optional[Dict[str, Any]] = None) -> bool:
        """Move the accepted, staged VERSION into ``versions/`` (not current yet); an update bundle is
        applied first into the full bundle it gives (:meth:`_apply_staged`; refused: dropped, nothing
        else changed).  False where that version was installed already (a re-run: the installed copy
        is kept)."""
        staged, final = self.p("staging", version), self.p("versions", version)
        try:
            ready = self._apply_staged(version, staged, info if info is not None else {})
        except EdgetoolError:
            shutil.rmtree(staged)  # refused: drop what was received, change nothing else
            raise
        placed = not os.path.isdir(final)
        if placed:
            os.replace(ready, final)
            fault_point("target:install:moved")
        else:
            shutil.rmtree(ready)
        if os.path.isdir(staged):  # an update: what was received, now applied
            shutil.rmtree(staged)
        return placed

    def _check_installed(self, version: str, highest: Optional[int], lost: Optional[str], allow_downgrade: bool):
        """An installed VERSION about to become current: the counter and its release, as for a staged one."""
        if lost and not allow_downgrade:
            raise self.counter_refusal(lost)
        self._check_release(self.p("versions", version), highest, allow_downgrade)

    def _commit(
        self,
        version: str,
        signer: Optional[str],
        highest: Optional[int],
        lost: Optional[str],
        allow_downgrade: bool,
        keep: int,
    ) -> Dict:
        """Switch ``current`` to the installed, checked VERSION with the new counter, then prune."""
        release = self.release_of(self.p("versions", version))
        extra: Dict[str, Any] = {"signer": signer, "release": release}
        if highest is None:  # allowed by the operator: the counter is rebuilt from what is installed
            extra.update(downgrade_allowed=True, counter_lost=lost)
            new_highest = max(release, self.highest_on_disk())
        else:
            if allow_downgrade and release < highest:
                extra["downgrade_allowed"] = True
            new_highest = max(release, highest)
        previous = self._switch(version, "install", extra, new_highest)
        fault_point("target:install:switched")
        pruned = self._prune(keep)
        fault_point("target:install:pruned")
        return {"release": release, "previous": previous, "pruned": pruned}

    def _apply_staged(self, version: str, staged: str, info: Dict[str, Any]) -> str:
        """The folder to install: *staged* itself, or for an update the full bundle it gives
        (:func:`.update.build`, which says what it rebuilt, shipped and reused in ``info["update"]``)."""
        update = staged_update(staged)
        if update is None:
            return staged
        shutil.rmtree(self.p(APPLY), ignore_errors=True)  # what an interrupted apply left
        work, info["update"] = build(self, version, staged, update)
        return work

    def _check_release(self, folder: str, highest: Optional[int], allow_downgrade: bool) -> None:
        """Anti-rollback: a release lower than *highest*, the highest this device installed, is refused."""
        release = self.release_of(folder)
        if highest is not None and release < highest and not allow_downgrade:
            raise DeployError(
                "release {} is older than release {} installed here before (a replayed old bundle?); "
                "deploy --allow-downgrade installs it anyway".format(release, highest)
            )

    def _switch(
        self, version: str, action: str, extra: Optional[Dict] = None, highest: Optional[int] = None
    ) -> Optional[str]:
        """The new state, with the anti-rollback counter *highest* where given, is written first, then
        ``current`` is switched: a crash between the two leaves a state that names the new version,
        which :meth:`heal` finishes on the next call."""
        st = self.state()
        old = self.current()
        if old != version:
            st["previous"] = old
        st["current"] = version
        if highest is not None:
            st["highest_release"] = highest
            st.pop("counter_lost", None)
        event = dict(extra or {}, action=action, version=version, at=now(), previous=old)
        st["history"] = (st.get("history", []) + [event])[-50:]
        fault_point("target:{}:before-state".format(action.split(":")[0]))
        self.save_state(st)
        fault_point("target:{}:after-state".format(action.split(":")[0]))
        atomic_symlink(os.path.join("versions", version), self.p("current"))
        fault_point("target:{}:after-link".format(action.split(":")[0]))
        return old

    def rollback(self, to: Optional[str] = None, reason: str = "rollback") -> Dict:
        if not os.path.isdir(self.p("versions")):
            raise DeployError("{}: nothing deployed here".format(self.root))
        with Lock(self.p(".lock")):
            fault_point("target:rollback:locked")
            self.heal()
            return self._rollback(to, reason)

    def _rollback(self, to: Optional[str], reason: str) -> Dict:
        st = self.state()
        target = to or st.get("previous")
        if target is None:
            raise DeployError("{}: no previous version to roll back to".format(self.root))
        check_version(target)
        if not os.path.isdir(self.p("versions", target)):
            raise DeployError("{}: version {} is not on this device".format(self.root, target))
        old = self._switch(target, reason)
        return {"version": target, "previous": old}

    def unlink_current(self, reason: str) -> None:
        """A failed first install: no version serves rather than an unchecked one."""
        st = self.state()
        st["history"] = (
            st.get("history", []) + [{"action": reason, "version": None, "at": now(), "previous": st.get("current")}]
        )[-50:]
        st["current"] = None
        self.save_state(st)
        if os.path.islink(self.p("current")):
            os.unlink(self.p("current"))

    def _prune(self, keep: int) -> list:
        """Drop the oldest versions beyond KEEP, never current or previous."""
        st = self.state()
        order = [e["version"] for e in st.get("history", []) if e.get("version")]
        present = [v for v in os.listdir(self.p("versions")) if VERSION_RE.match(v)]
        ranked = sorted(present, key=lambda v: max([i for i, x in enumerate(order) if x == v] + [-1]), reverse=True)
        protect = {st.get("current"), st.get("previous")}
        pruned = [v for v in ranked[max(keep, 2) :] if v not in protect]
        for v in pruned:
            fault_point("target:prune:before-remove")
            shutil.rmtree(self.p("versions", v))
        return pruned
