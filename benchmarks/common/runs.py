"""Training runs the benchmarks share between scripts: opening a run, a sibling run that reuses
another's trained stages with some settings changed."""

from __future__ import annotations

import copy
import json
import os
import shutil


def open_run(path, cfg, progress):
    from edgetool.toolchain.train.run import Run

    return Run.open(path, copy.deepcopy(cfg), progress=progress)


def share_flat(src, path, files=("flat.pt",)):
    """Copy the trained stages *files* of the run at *src* into the run folder *path*."""
    os.makedirs(path, exist_ok=True)
    for f in files:
        if not os.path.isfile(os.path.join(path, f)):
            shutil.copy(os.path.join(src, f), os.path.join(path, f))


def sibling(run, suffix, progress, **cfg):
    """A run beside *run* with the same flat and superclass networks and *cfg* changed."""
    path = run.path.rstrip("/") + suffix
    share_flat(run.path, path, ("flat.pt", "super.pt"))
    return open_run(path, dict_cfg(run.cfg, **cfg), progress)


def dict_cfg(cfg, **kw):
    c = copy.deepcopy(cfg)
    for k, v in kw.items():
        setattr(c, k, v)
    return c


def not_mine_run(path: str, ratio: float) -> str:
    """A run like *path* whose subclass networks have a "not mine" row (``--ft-outliers ratio
    --ft-not-mine``), at ``<path>-bundle-notmine<R>``; it shares the flat network, which the row
    does not change, and trains the rest."""
    import shutil

    folder = "{}-bundle-notmine{:g}".format(path.rstrip("/"), ratio)
    if not os.path.isfile(os.path.join(folder, "config.json")):
        os.makedirs(folder, exist_ok=True)
        with open(os.path.join(path, "config.json")) as f:
            cfg = json.load(f)
        cfg.update(ft_outliers=float(ratio), ft_not_mine=True)
        shutil.copy(os.path.join(path, "flat.pt"), os.path.join(folder, "flat.pt"))
        with open(os.path.join(folder, "config.json"), "w") as f:
            json.dump(cfg, f, indent=1)
    return folder
