"""Atomic bundle output: write into a temporary sibling, then rename into place.

* ``--out`` may be missing, an empty folder, or an edgetool bundle (its manifest.json
  parses as one); anything else is refused unless ``force``, and a path that is not a
  folder is always refused.
* The new bundle is complete before it replaces the old one: on Linux the two folders are
  swapped in one ``renameat2(RENAME_EXCHANGE)``; elsewhere the old one is renamed aside
  first.  A process killed at any point leaves the previous bundle or the new one, valid,
  and at worst a hidden ``.NAME.tmp-*`` sibling, which the next export removes (only when
  it carries the partial-export marker or is itself a bundle, so nothing else is removed).
* Archives are written under a temporary name in the same folder and renamed.

``EDGETOOL_FAULT_KILL=<point>`` kills the process with SIGKILL at a named point; the test
suite uses it to prove the above.
"""

from __future__ import annotations

import contextlib
import ctypes
import glob
import os
import shutil
import tarfile
import tempfile

from edgetool.runtime.bundle import manifest as M
from edgetool.runtime.errors import UsageError
from edgetool.runtime.files import TMP_TAG, atomic_path, fault_point

MARK = ".edgetool-partial"


def is_bundle(path: str) -> bool:
    """True when *path* is a folder whose manifest.json is an edgetool manifest (a bundle's or an update's)."""
    mpath = os.path.join(path, M.MANIFEST)
    if os.path.islink(path) or os.path.islink(mpath) or not os.path.isfile(mpath):
        return False
    from edgetool.runtime.bundle import update

    try:
        with open(mpath, "rb") as f:
            data = f.read(M.MAX_MANIFEST_BYTES + 1)
    except OSError:
        return False
    for loads in (M.loads, update.loads):  # a full bundle or an update bundle
        try:
            loads(data)
            return True
        except M.ManifestError:
            pass
    return False


def check_out(out: str, force: bool = False) -> None:
    """Refuse an --out that is not a folder, or a non-empty folder that is not a bundle (unless *force*)."""
    if os.path.islink(out) or (os.path.lexists(out) and not os.path.isdir(out)):
        raise UsageError("{}: exists and is not a folder; refusing to replace it".format(out))
    if os.path.isdir(out) and os.listdir(out) and not is_bundle(out) and not force:
        raise UsageError(
            "{}: exists and is not an edgetool bundle; refusing to replace it "
            "(pass --force to replace it anyway)".format(out)
        )


@contextlib.contextmanager
def staged_dir(out: str, force: bool = False):
    """Yield a temporary sibling of *out*; on success it replaces *out* atomically."""
    check_out(out, force)
    parent = os.path.dirname(os.path.abspath(out))
    name = os.path.basename(os.path.normpath(out))
    os.makedirs(parent, exist_ok=True)
    prefix = "." + name + TMP_TAG
    for stale in glob.glob(os.path.join(parent, prefix + "*")):
        # ours: a partial bundle (marker file) or a whole one (new before its rename, old after the
        # swap), left by an export whose process is gone; a live export's temp is left alone
        if os.path.islink(stale) or _owner_alive(os.path.basename(stale)[len(prefix) :]):
            continue
        if os.path.isfile(os.path.join(stale, MARK)) or is_bundle(stale):
            shutil.rmtree(stale, ignore_errors=True)
    tmp = tempfile.mkdtemp(prefix="{}{}-".format(prefix, os.getpid()), dir=parent)  # the owner in its name
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o777 & ~umask)  # the published bundle folder follows the umask, as mkdir would
        open(os.path.join(tmp, MARK), "w").close()
        yield tmp
        check_out(out, force)
        os.remove(os.path.join(tmp, MARK))
        fault_point("export:before-rename")
        _publish(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _owner_alive(suffix: str) -> bool:
    """Whether the export that named a temp "<pid>-<random>" still runs (older names: no owner)."""
    owner = suffix.split("-", 1)[0]
    return owner.isdigit() and int(owner) > 0 and _alive(int(owner))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _publish(tmp: str, out: str) -> None:
    if not os.path.lexists(out):
        os.rename(tmp, out)
        return
    if _exchange(tmp, out):
        fault_point("export:after-rename")
        shutil.rmtree(tmp)  # now the previous bundle
        return
    old = tmp + ".old"
    os.rename(out, old)
    os.rename(tmp, out)
    shutil.rmtree(old)


def _exchange(a: str, b: str) -> bool:
    """Swap two paths atomically (Linux renameat2 RENAME_EXCHANGE); False where unavailable."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        fn = libc.renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    rc = fn(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange)
    return rc == 0


def write_archive(bundle_dir: str, path: str, force: bool = False) -> str:
    """One .tar.gz of the bundle folder (manifest.json first, then the files it lists), under a temporary name."""
    if os.path.islink(path) or (os.path.lexists(path) and not os.path.isfile(path)):
        raise UsageError("{}: exists and is not a file; refusing to replace it".format(path))
    if os.path.isfile(path) and not force and not tarfile.is_tarfile(path):
        raise UsageError(
            "{}: exists and is not a tar archive; refusing to replace it (pass --force to replace it anyway)".format(
                path
            )
        )
    top = os.path.basename(os.path.normpath(bundle_dir))
    folder, prefix = os.path.dirname(os.path.abspath(path)), "." + os.path.basename(path) + TMP_TAG
    for stale in glob.glob(os.path.join(folder, prefix + "*")):
        if _owner_alive(os.path.basename(stale)[len(prefix) :]):
            continue  # another export's archive in the making
        if os.path.isfile(stale) and not os.path.islink(stale) and _gzip_or_empty(stale):
            os.remove(stale)  # a temporary archive of ours, left by a killed export
    with atomic_path(path, mode=0o644) as tmp, tarfile.open(tmp, mode="w:gz") as tar:
        tar.add(os.path.join(bundle_dir, M.MANIFEST), arcname=top + "/" + M.MANIFEST)
        for rel in _listed(bundle_dir):  # only what the manifest lists: the reader refuses anything else
            tar.add(os.path.join(bundle_dir, rel), arcname=top + "/" + rel, recursive=False)
            fault_point("archive:member")
    return path


def _listed(bundle_dir: str):
    from edgetool.runtime.bundle.names import FieldError

    try:
        with open(os.path.join(bundle_dir, M.MANIFEST), "rb") as f:
            model = M.parse(M.loads(f.read(M.MAX_MANIFEST_BYTES + 1)))
    except (OSError, M.ManifestError, FieldError) as exc:
        raise UsageError("{}: not a valid bundle to archive ({})".format(bundle_dir, exc)) from None
    signature = "manifest.sig"  # a deploy signature beside the manifest travels with it
    extra = [signature] if os.path.isfile(os.path.join(bundle_dir, signature)) else []
    return extra + [entry.file for entry in model.files()]


def _gzip_or_empty(path: str) -> bool:
    with open(path, "rb") as f:
        head = f.read(2)
    return head in (b"", b"\x1f\x8b")
