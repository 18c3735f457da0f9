"""The official CIFAR-10/100 python archives: download (checksum-verified) and load."""

from __future__ import annotations

import os
import pickle
import sys
import tarfile
import urllib.error
import urllib.request
from typing import IO, TYPE_CHECKING, List, Optional, cast

import numpy as np

from edgetool.runtime.errors import EdgetoolError, UsageError
from edgetool.runtime.files import atomic_path, sha256_file

from .folders import ArrayDataset
from ..hierarchy.spec import Hierarchy

if TYPE_CHECKING:
    from click._termui_impl import ProgressBar

ARCHIVES = {
    "cifar10": {
        "url": "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
        "md5": "c58f30108f718f92721af3b95e74349a",
        "file": "cifar-10-python.tar.gz",
        "folder": "cifar-10-batches-py",
    },
    "cifar100": {
        "url": "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
        "md5": "eb9058c3a382ffc7106e4002c42a8d85",
        "file": "cifar-100-python.tar.gz",
        "folder": "cifar-100-python",
    },
}
# CIFAR-10 has no official taxonomy; edgetool uses vehicle / animal.
CIFAR10_HIERARCHY = Hierarchy(
    ["vehicle", "animal"],
    [["airplane", "automobile", "ship", "truck"], ["bird", "cat", "deer", "dog", "frog", "horse"]],
)


class DownloadError(EdgetoolError):
    pass


def md5_file(path: str) -> str:
    return sha256_file(path, "md5")


def download(
    name: str,
    dest: str,
    url: Optional[str] = None,
    md5: Optional[str] = None,
    progress: bool = True,
    timeout: float = 60.0,
) -> str:
    """Fetch the official archive of *name* into *dest*, verify its md5, and return its path."""
    if name not in ARCHIVES:
        raise UsageError("unknown dataset {!r}; choose one of {}".format(name, ", ".join(ARCHIVES)))
    spec = ARCHIVES[name]
    url = url or spec["url"]
    md5 = md5 or spec["md5"]
    os.makedirs(dest, exist_ok=True)
    target = os.path.join(dest, spec["file"])
    if os.path.isfile(target) and md5_file(target) == md5:
        return target
    with atomic_path(target) as tmp:  # a stopped or failed download leaves nothing behind
        try:
            with urllib.request.urlopen(url, timeout=timeout) as resp, open(tmp, "wb") as out:
                total = int(resp.headers.get("Content-Length") or 0)
                import click

                bar: ProgressBar[int]
                with click.progressbar(
                    length=total or None, label="downloading " + spec["file"], file=sys.stderr
                ) as bar:
                    while True:
                        chunk = resp.read(1 << 16)
                        if not chunk:
                            break
                        out.write(chunk)
                        bar.update(len(chunk))
        except (urllib.error.URLError, OSError, ValueError) as exc:
            raise DownloadError("cannot download {}: {}".format(url, getattr(exc, "reason", exc))) from None
        got = md5_file(tmp)
        if got != md5:
            raise DownloadError(
                "{}: checksum mismatch (md5 {}, expected {}); the file was not kept".format(url, got, md5)
            )
    return target


def _unpickle(data: bytes) -> dict:
    return pickle.loads(data, encoding="bytes")


def load_archive(path: str, split: str):
    """(ArrayDataset, Hierarchy) from cifar-10-python.tar.gz or cifar-100-python.tar.gz (or the extracted folder)."""
    if not os.path.exists(path):
        raise UsageError("{}: no such CIFAR archive".format(path))
    members = {}
    try:
        if os.path.isdir(path):
            for root, _, files in os.walk(path):
                for f in files:
                    with open(os.path.join(root, f), "rb") as fh:
                        members[f] = fh.read()
        else:
            with tarfile.open(path) as tar:
                for m in tar.getmembers():
                    if m.isfile():
                        members[os.path.basename(m.name)] = cast(IO[bytes], tar.extractfile(m)).read()
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise UsageError("{}: cannot read CIFAR archive ({})".format(path, exc)) from None
    try:
        if "batches.meta" in members:  # CIFAR-10
            meta = _unpickle(members["batches.meta"])
            classes = [c.decode() for c in meta[b"label_names"]]
            names = ["data_batch_{}".format(i) for i in range(1, 6)] if split == "train" else ["test_batch"]
            batches = [_unpickle(members[n]) for n in names]
            x = np.concatenate([b[b"data"] for b in batches])
            y = np.concatenate([np.asarray(b[b"labels"]) for b in batches])
            hier = CIFAR10_HIERARCHY
        elif "meta" in members:  # CIFAR-100
            meta = _unpickle(members["meta"])
            classes = [c.decode() for c in meta[b"fine_label_names"]]
            coarse_names = [c.decode() for c in meta[b"coarse_label_names"]]
            b = _unpickle(members["train" if split == "train" else "test"])
            x = np.asarray(b[b"data"])
            y = np.asarray(b[b"fine_labels"])
            coarse = np.asarray(b[b"coarse_labels"])
            subs: List[List[str]] = [[] for _ in coarse_names]
            for fine in range(len(classes)):
                ks = np.unique(coarse[y == fine])
                if len(ks) == 1:
                    subs[int(ks[0])].append(classes[fine])
            hier = Hierarchy(coarse_names, subs)
        else:
            raise KeyError("batches.meta or meta")
    except (KeyError, pickle.UnpicklingError, ValueError, EOFError) as exc:
        raise UsageError("{}: not an official CIFAR python archive ({})".format(path, exc)) from None
    images = np.ascontiguousarray(x.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1), dtype=np.uint8)
    return ArrayDataset(images, y.astype(np.int64), classes, os.path.basename(path)), hier


def find_archive(root: str) -> Optional[str]:
    for spec in ARCHIVES.values():
        for cand in (os.path.join(root, spec["file"]), os.path.join(root, spec["folder"])):
            if os.path.exists(cand):
                return cand
    if os.path.isfile(root) and root.endswith((".tar.gz", ".tgz")):
        return root
    return None
