"""A run keeps its word: which stages a change of settings makes stale, the refusal of a change
that would leave a run's networks unlike its config.json, and ``train NEW --from RUN``, which
copies every network a change leaves valid."""

from __future__ import annotations

import os
from dataclasses import asdict
from typing import Dict, List, Set

from edgetool.runtime import commands
from edgetool.runtime.errors import UsageError

from .run_data import TrainConfig


# The training stages in order, the files each leaves in the run folder, and what each starts from.
STAGES = ("flat", "superclass", "vanilla", "super_qat", "qat")
STAGE_FILES = {
    "flat": ("flat.pt",),
    "superclass": ("super.pt",),
    "vanilla": ("vanilla",),
    "super_qat": ("super_qat.pt",),
    "qat": ("qat",),
}
_STARTS_FROM = {"superclass": "flat", "vanilla": "superclass", "super_qat": "superclass", "qat": "super_qat"}
# The first stages each setting shapes (every other setting shapes every stage; limit_test none).
_SHAPES = {
    "limit_test": (),
    "epochs": ("flat",),
    "lr": ("flat",),
    "hierarchy": ("superclass",),
    "base_init": ("superclass",),
    "base_epochs": ("superclass",),
    "ft_epochs": ("vanilla", "qat"),
    "ft_lr": ("vanilla", "qat"),
    "ft_weight_decay": ("vanilla", "qat"),
    "ft_outliers": ("vanilla", "qat"),
    "ft_not_mine": ("vanilla", "qat"),
    "qat_epochs": ("super_qat",),
    "qat_lr": ("super_qat",),
    "calib_batches": ("super_qat",),
    "qat_weight_grad": ("qat",),
    "delta_budget": ("qat",),
    "update_of": ("super_qat",),
}


def affected_stages(changed) -> List[str]:
    """The stages a change of the settings *changed* makes stale: those they shape, and every
    stage that starts from one of those."""
    out: Set[str] = set()
    for field in changed:
        out.update(_SHAPES.get(field, ("flat",)))
    grew = True
    while grew:
        more = {s for s, parent in _STARTS_FROM.items() if parent in out} - out
        grew = bool(more)
        out |= more
    return [s for s in STAGES if s in out]


def changed_settings(old: "TrainConfig", new: "TrainConfig") -> Dict[str, tuple]:
    """{setting: (old value, new value)} for every setting that differs."""
    a, b = asdict(old), asdict(new)
    return {k: (a[k], b[k]) for k in a if a[k] != b[k]}


def trained_files(path: str, stage: str) -> List[str]:
    """The files (finished or partial) *stage* has left in the run folder at *path*."""
    out = []
    for rel in STAGE_FILES[stage]:
        full = os.path.join(path, rel)
        if os.path.isdir(full):
            out += [os.path.join(rel, f) for f in sorted(os.listdir(full)) if f.endswith((".pt", ".partial"))]
        out += [r for r in (rel, rel + ".partial") if os.path.isfile(os.path.join(path, r))]
    return out


def check_resume(path: str, cfg: "TrainConfig") -> None:
    """Refuse a setting that differs from the run's config.json when a stage it shapes has been
    trained: the run's networks would not be what its config says.  The way out is a new run
    that reuses the stages the change leaves valid (``train NEW --from RUN``)."""
    cpath = os.path.join(path, "config.json")
    if not os.path.isfile(cpath):
        return
    old = TrainConfig.load(cpath)
    if os.path.isfile(os.path.join(path, "super.pt")) and old.ft_not_mine != cfg.ft_not_mine:
        raise UsageError(
            '{}: trained {} a "not mine" row; --ft-not-mine cannot change on it: train into a new folder '
            "(`{}` reuses its flat and superclass networks)".format(
                path, "with" if old.ft_not_mine else "without", commands.train_from(path)
            )
        )
    changed = changed_settings(old, cfg)
    stale = [s for s in affected_stages(changed) if trained_files(path, s)]
    if stale:
        what = ", ".join("{} {} -> {}".format(k, _shown(a), _shown(b)) for k, (a, b) in sorted(changed.items()))
        raise UsageError(
            "{}: {} changes networks this run already trained ({}); nothing was changed. Start a new run that "
            "reuses the rest: `{}` (with the new settings)".format(
                path, what, ", ".join(stale), commands.train_from(path)
            )
        )


def reuse(old_path: str, new_path: str, cfg: "TrainConfig") -> List[str]:
    """Start the run *new_path* from *old_path*: copy the finished checkpoints of every stage the
    settings that differ leave valid (and the flat controls, while no stage is stale that they
    share settings with).  Returns the files copied."""
    import shutil

    old = TrainConfig.load(os.path.join(old_path, "config.json"))
    stale = set(affected_stages(changed_settings(old, cfg)))
    keep = [s for s in STAGES if s not in stale]
    files = [f for s in keep for f in trained_files(old_path, s) if not f.endswith(".partial")]
    if "flat" in keep and os.path.isdir(os.path.join(old_path, "controls")):
        files += [os.path.join("controls", f) for f in sorted(os.listdir(os.path.join(old_path, "controls")))]
    for rel in files:
        os.makedirs(os.path.dirname(os.path.join(new_path, rel)) or new_path, exist_ok=True)
        shutil.copy2(os.path.join(old_path, rel), os.path.join(new_path, rel))
    return files


def start_from(old_path: str, new_path: str, make_config) -> "TrainConfig":
    """``train NEW --from OLD``: NEW's settings (``make_config(OLD/config.json)``, the flags on top),
    and a copy of every network of OLD they leave valid; says what it reused."""
    import click

    if not os.path.isfile(os.path.join(old_path, "config.json")):
        raise UsageError("--from {}: not a training run (no config.json)".format(old_path))
    if os.path.exists(os.path.join(new_path, "config.json")):
        raise UsageError("{}: already a run; --from starts a new one (give a new folder)".format(new_path))
    cfg = make_config(os.path.join(old_path, "config.json"))
    copied = reuse(old_path, new_path, cfg)
    click.echo("reused from {}: {}".format(old_path, ", ".join(copied) or "nothing (every stage changes)"), err=True)
    return cfg


def _shown(v) -> str:
    return ascii(v)[:40]
