"""Workstation side of deploy: ship a bundle to each target, install it there, summarise per host."""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
from typing import Any, Dict, List, Optional

from .. import commands
from ..bundle.signature import SIGNATURE, signature_key_id
from ..errors import DeployError, EdgetoolError, SignatureError, StoppedError
from .parallel import Stop
from .report import Progress

CHUNK = 1 << 16


class Source:
    """A verified bundle and the files to ship: manifest, signature, and every file the manifest lists
    (or, for an update bundle, :meth:`of_update`: the files it ships)."""

    update: Optional[Any] = None  # an update bundle's parsed manifest (runtime.bundle.update.Update)

    def __init__(self, bundle):
        self.bundle = bundle
        self._setup(bundle.root, bundle.model.release, bundle.files(), bundle.manifest)

    @classmethod
    def of_update(cls, root: str, update) -> "Source":
        """An update bundle folder: its manifest, signature, base delta and the files it ships."""
        src = cls.__new__(cls)
        src.update, src.root = update, root
        files = [{"file": e.file, "size": e.size, "sha256": e.sha256} for e in update.files()]
        src._setup(root, update.release, files, update.raw)
        return src

    def _setup(self, root: str, release: int, entries, manifest: dict) -> None:
        self.root = root
        with open(os.path.join(root, "manifest.json"), "rb") as f:
            data = f.read()
        self.files = [("manifest.json", len(data), hashlib.sha256(data).hexdigest())]
        sig = os.path.join(root, SIGNATURE)
        self.signed = os.path.isfile(sig)
        self.key_id: Optional[str] = None
        self.release = release
        if self.signed:
            with open(sig, "rb") as f:
                s = f.read()
            self.files.append((SIGNATURE, len(s), hashlib.sha256(s).hexdigest()))
            try:
                self.key_id = signature_key_id(root)
            except SignatureError:
                self.key_id = None  # the device's own check names what is wrong with it
        for e in entries:
            self.files.append((e["file"], int(e.get("stored_size", e.get("size"))), e["sha256"]))
        created = re.sub(r"[^0-9TZ]", "", str(manifest.get("created", "")))[:16] or "bundle"
        self.version = "{}-{}".format(created, hashlib.sha256(data).hexdigest()[:12])

    def path(self, rel: str) -> str:
        return os.path.join(self.root, rel)


def run_json(transport, args: List[str], timeout: Optional[float] = None) -> Dict:
    proc = transport.run(args, timeout=timeout)
    if proc.returncode != 0:
        raise DeployError(_last_line(proc.stderr) or "exit status {}".format(proc.returncode))
    lines = [ln for ln in proc.stdout.splitlines() if ln.strip()]
    try:
        return json.loads(lines[-1])
    except (IndexError, ValueError):
        raise DeployError("unexpected reply from the target: {!r}".format(proc.stdout[-200:])) from None


def _last_line(text) -> str:
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    lines = [ln.strip() for ln in (text or "").splitlines() if ln.strip()]
    last = lines[-1] if lines else ""
    return last[len("error: ") :] if last.startswith("error: ") else last


def acceptable(source: Source, policy: Dict, root: str, allow_downgrade: bool = False) -> None:
    """Refuse, before any byte is sent, a bundle the device would refuse: unsigned where it needs a
    signature, signed by a key it does not trust, or an older release than it installed."""
    if not policy:  # an older device side that does not report its policy: it checks on install
        return
    how = "on the device: `{}`".format(commands.target_trust(root))
    if not source.signed and not policy.get("accept_unsigned"):
        raise DeployError(
            "the device accepts only signed bundles and this one is unsigned: sign it with `{}`; ".format(
                commands.export_signed()
            )
            + how
        )
    trusted = policy.get("trusted_keys") or []
    if source.signed and policy.get("trust_error"):
        raise DeployError("the device cannot read its trusted keys: {}".format(policy["trust_error"]))
    if source.signed and source.key_id not in trusted:
        raise DeployError(
            "the bundle is signed by key {} which the device does not trust (trusted: {}); {}".format(
                source.key_id, ", ".join(trusted) or "none", how
            )
        )
    highest = policy.get("highest_release")
    if type(highest) is not int or highest < 0:  # fail closed: a counter the device cannot vouch for
        if allow_downgrade:
            return
        raise DeployError(
            str(policy.get("counter_error") or "")
            or "the device reports no usable anti-rollback counter (highest_release {}); refusing to "
            "install, since an older release could slip in: on the device `{}`, "
            "or deploy --allow-downgrade".format(repr(highest)[:40], commands.target_reset_counter(root))
        )
    if source.release < highest and not allow_downgrade:
        raise DeployError(
            "release {} is older than release {} installed on the device (a replayed old bundle?); "
            "deploy --allow-downgrade installs it anyway".format(source.release, highest)
        )
    bases = policy.get("installed_bases")
    if source.update is not None and isinstance(bases, dict) and source.update.base_sha256 not in bases:
        have = ", ".join("{} base {}".format(v, sha[:12]) for sha, v in sorted(bases.items())) or "no version"
        raise DeployError(
            "the update applies to base {}, which the device does not have (it has {}); deploy a full "
            "bundle instead".format(source.update.base_sha256[:12], have)
        )


NOTHING_CHANGED = "nothing changed on this host"


def upload(
    transport,
    root: str,
    source: Source,
    progress: Progress,
    bwlimit_kib: Optional[float] = None,
    allow_downgrade: bool = False,
    stop: Optional[Stop] = None,
) -> int:
    """Send every file the target does not already hold, complete; return the bytes sent.  Nothing
    is sent to a device that would refuse the bundle (:func:`acceptable`)."""
    stop = stop or Stop()
    state = run_json(transport, ["target", "prepare", root, source.version])
    acceptable(source, state.get("policy") or {}, root, allow_downgrade)
    if state.get("installed"):
        return 0
    present = state.get("present", {})
    todo = [f for f in source.files if present.get(f[0]) != f[2]]
    stop.check("before its upload; " + NOTHING_CHANGED)
    progress.start(sum(f[1] for f in todo), len(todo))
    if todo:
        _send(transport, root, source, todo, progress, bwlimit_kib, stop)
    progress.done()
    return progress.sent


def file_header(rel: str, size: int, sha256: str) -> bytes:
    """The line before a file's bytes in what ``edgetool target receive`` reads (a Mender payload too)."""
    return (json.dumps({"file": rel, "size": size, "sha256": sha256}) + "\n").encode("utf-8")


def _send(transport, root, source, todo, progress, bwlimit_kib, stop: Stop) -> None:
    """One ``target receive`` for all files: a header line per file, then its bytes."""
    proc = transport.popen(["target", "receive", root, source.version])
    t0, sent = time.monotonic(), 0
    try:
        for rel, size, sha in todo:
            proc.stdin.write(file_header(rel, size, sha))
            with open(source.path(rel), "rb") as f:
                for chunk in iter(lambda: f.read(CHUNK), b""):
                    if stop.is_set():  # the end of input: the device drops the file in transfer, keeps the rest
                        _end(proc)
                        stop.check(
                            "during its upload ({} of {}); nothing installed, the files received stay staged "
                            "and a re-run sends the rest".format(_size(progress.sent), _size(progress.total))
                        )
                    proc.stdin.write(chunk)
                    sent += len(chunk)
                    progress.update(len(chunk))
                    if bwlimit_kib:
                        ahead = sent / (bwlimit_kib * 1024.0) - (time.monotonic() - t0)
                        while ahead > 0 and not stop.is_set():
                            time.sleep(min(ahead, 0.1))
                            ahead = sent / (bwlimit_kib * 1024.0) - (time.monotonic() - t0)
        proc.stdin.close()
    except BrokenPipeError:  # the target stopped reading: its error line says why
        pass
    err = proc.stderr.read()
    proc.stdout.read()
    proc.wait()
    if proc.returncode != 0:
        raise DeployError("upload failed: {}".format(_last_line(err) or "exit status {}".format(proc.returncode)))


def _end(proc, wait: float = 15.0) -> None:
    """Close the upload's input and let the device side end by itself (it removes its partial
    file on the short read); killed only if it does not end within *wait* seconds."""
    import subprocess

    try:
        proc.stdin.close()
    except OSError:
        pass
    try:
        proc.wait(timeout=wait)  # it writes one error line at most: the pipes cannot fill
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    for stream in (proc.stdout, proc.stderr):
        stream.close()


def deploy_one(
    transport,
    root: str,
    source: Source,
    steps: Dict,
    keep: int = 3,
    bwlimit_kib: Optional[float] = None,
    progress: Optional[Progress] = None,
    stop: Optional[Stop] = None,
) -> Dict:
    t0 = time.monotonic()
    stop = stop or Stop()
    res: Dict = {"host": transport.label, "version": source.version}
    try:
        stop.check("before it began; " + NOTHING_CHANGED)
        allow = bool(steps.get("allow_downgrade"))
        sent = upload(transport, root, source, progress or Progress(transport.label), bwlimit_kib, allow, stop)
        stop.check("before its install; the bundle is staged there, nothing switched")
        args = ["target", "install", root, source.version, "--keep", str(keep)]
        if steps.get("engine_profile"):
            args += ["--engine-build", steps["engine_profile"]]
        if steps.get("doctor"):
            args.append("--doctor")
        if steps.get("allow_downgrade"):
            args.append("--allow-downgrade")
        info = run_json(transport, args)
        doctor = [s for s in info.get("steps", []) if s.get("step") == "doctor"]
        upd = info.get("update") or {}
        applied = "; update of {} (base {}) applied in {} s".format(upd.get("update_of"), upd.get("base"),
                                                                   upd.get("apply_seconds")) if upd else ""  # fmt: skip
        res.update(
            doctor=doctor[0]["ok"] if doctor else None,
            ok=True,
            previous=info.get("previous"),
            sent=sent,
            update=upd or None,
            detail="{} installed ({} sent{}){}{}".format(
                source.version,
                _size(sent),
                applied,
                "; previous {} kept".format(info["previous"]) if info.get("previous") else "",
                "; the stop ({}) came during its install, which finished".format(stop.name) if stop.is_set() else "",
            ),
        )
    except StoppedError as exc:
        res.update(ok=False, stopped=True, error=str(exc), doctor=None)
    except (EdgetoolError, OSError) as exc:
        res.update(ok=False, error=str(exc), doctor=False if "doctor failed" in str(exc) else None)
    res["seconds"] = time.monotonic() - t0
    return res


def _size(n: int) -> str:
    return "{:.2f} MiB".format(n / 1048576.0) if n >= 1 << 20 else "{} bytes".format(n)


def remote_call(transport, args: List[str]) -> Dict:
    """One JSON-answering target command (status, rollback) as a per-host result."""
    out = run_json(transport, args)
    return {"host": transport.label, "ok": True, "reply": out}
