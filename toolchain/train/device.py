"""Where the networks train and predict: the CPU, or a CUDA GPU that torch sees.

``--threads`` (train, demo) or ``$EDGETOOL_THREADS`` sets how many threads torch trains with on the
CPU (default: every core this process may run on).

``--device`` (train, demo, evaluate) or ``$EDGETOOL_DEVICE`` chooses: ``auto`` (a CUDA GPU when
torch sees one, else the CPU), ``cpu``, ``cuda`` or ``cuda:N``.  Under torchrun each process
takes the GPU of its ``LOCAL_RANK``.  The device is a place, not part of the recipe: it is not
recorded in config.json, and a run started on one device resumes on another.  Networks live on
the CPU between stages; :func:`edgetool.toolchain.train.fit.fit` and ``predict_logits`` move them to
the device for their work and back.
"""

from __future__ import annotations

import os
from typing import Optional

import torch

from edgetool.runtime.errors import UsageError

ENV = "EDGETOOL_DEVICE"
CHOICES = "auto, cpu, cuda or cuda:N"
_chosen: Optional[torch.device] = None


def resolve(name: Optional[str] = None) -> torch.device:
    """The device *name* (default ``$EDGETOOL_DEVICE``, else ``auto``) stands for; UsageError when
    it is not one of CHOICES or names a GPU that torch does not see."""
    text = (name if name is not None else os.environ.get(ENV, "")).strip().lower() or "auto"
    if text == "auto":
        text = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        dev: Optional[torch.device] = torch.device(text)
    except (RuntimeError, ValueError):
        dev = None
    if dev is None or dev.type not in ("cpu", "cuda") or (dev.type == "cpu" and dev.index not in (None, 0)):
        raise UsageError("device {}: choose {}".format(ascii(text)[:40], CHOICES))
    if dev.type == "cpu":
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise UsageError(
            "device {}: torch sees no CUDA GPU (a CPU-only torch build, or no NVIDIA driver); use --device cpu".format(
                text
            )
        )
    index = dev.index if dev.index is not None else int(os.environ.get("LOCAL_RANK", "0") or 0)
    count = torch.cuda.device_count()
    if index >= count:
        raise UsageError("device {}: torch sees {} CUDA GPU(s), numbered from 0".format(text, count))
    return torch.device("cuda", index)


def select(name: Optional[str] = None) -> torch.device:
    """Resolve *name* once for this process (the CLI calls it before any work)."""
    global _chosen
    _chosen = resolve(name)
    if _chosen.type == "cuda":
        torch.cuda.set_device(_chosen)
        torch.backends.cudnn.benchmark = True  # fixed input shapes: let cuDNN pick its fastest kernels
    return _chosen


def current() -> torch.device:
    """The selected device (resolved from ``$EDGETOOL_DEVICE`` or ``auto`` on first use)."""
    return _chosen if _chosen is not None else select()


def describe(dev: Optional[torch.device] = None) -> str:
    """'cpu, 2 threads' or 'cuda:0 (NVIDIA H200)' for logs and reports."""
    dev = dev or current()
    if dev.type != "cuda":
        return "cpu, {} thread{}".format(torch.get_num_threads(), "s" if torch.get_num_threads() != 1 else "")
    return "{} ({})".format(dev, torch.cuda.get_device_name(dev))


THREADS_ENV = "EDGETOOL_THREADS"
_threads: Optional[int] = None  # --threads, once the CLI has read it


def choose_threads(n: Optional[int]) -> None:
    """``--threads N`` (train, demo): torch's threads for this process; None or 0 leaves the default."""
    global _threads
    if n is not None and n < 0:
        raise UsageError("--threads must be >= 0 (0: every core), got {}".format(n))
    _threads = n or None


def threads() -> int:
    """The threads torch trains with: ``--threads``, else ``$EDGETOOL_THREADS``, else every core this process
    may run on (0 in either: every core)."""
    if _threads:
        return _threads
    text = os.environ.get(THREADS_ENV, "").strip()
    if text and not text.isdigit():
        raise UsageError("{}={}: not a whole number of threads (0: every core)".format(THREADS_ENV, ascii(text)[:40]))
    if text and int(text):
        return int(text)
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def set_threads() -> None:
    torch.set_num_threads(threads())
