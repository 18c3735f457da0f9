"""Adaptive network selection (Chennupati et al., Algorithm 2) for vanilla Super-Sub.

Each cluster's subclass network is chosen from a set of predefined configurations by its
accuracy on the validation images of the cluster's classes (``--val-fraction``; never the
test set).  The configurations:

* ``base-ft``: the vanilla subclass network, fine-tuned from the superclass network;
* ``flat-ft``: fine-tuned from the flat network, its head rows started from the flat head's
  rows of the cluster's classes (same recipe and epochs as ``base-ft``);
* ``flat``: the flat network itself, restricted to the cluster's classes (no training).

Vanilla mode only: ``flat`` has the flat head, so not every choice shares the one refittable
architecture the efficient bundle needs.
"""

from __future__ import annotations

import copy
from typing import Any, Dict, List

import numpy as np
import torch

from edgetool.runtime.errors import UsageError

from ..train import fit as training
from ..train import models
from ..train.checkpoints import float_from_state, float_state

CANDIDATES = ("base-ft", "flat-ft", "flat")


class Restricted(torch.nn.Module):
    """A network over all classes, read as a subclass network: only its cluster's logits, in order."""

    def __init__(self, net, members: np.ndarray):
        super().__init__()
        self.net = net
        self.register_buffer("idx", torch.from_numpy(np.asarray(members, dtype=np.int64)))

    def forward(self, x):
        return self.net(x).index_select(1, self.idx)


def flat_finetune(run, k: int):
    """Candidate ``flat-ft`` of cluster k (a stage of the run, checkpointed like every other)."""
    name = run.hier.superclasses[k]
    members = run.hier.members(run.train.classes)[k]

    def make():
        flat = run.flat()
        m = run.new_model(run.hier.head_width)
        models.load_trunk(m, flat.state_dict())
        with torch.no_grad():
            rows = torch.from_numpy(members)
            m.fc.weight[: len(members)] = flat.fc.weight[rows]
            m.fc.bias[: len(members)] = flat.fc.bias[rows]
        run.fine_tune(m, k, "flat-ft subclass [{}]".format(name))
        return float_state(m)

    return float_from_state(run.stage("adaptive-flat-ft:" + name, run.file("adaptive", "{}.pt".format(k)), make))


def candidate(run, name: str, k: int):
    if name == "base-ft":
        return run.vanilla(k)
    if name == "flat-ft":
        return flat_finetune(run, k)
    if name == "flat":
        return Restricted(copy.deepcopy(run.flat()), run.hier.members(run.train.classes)[k]).eval()
    raise UsageError("unknown network configuration {!r}; choose from {}".format(name, ", ".join(CANDIDATES)))


def select(run, candidates=CANDIDATES) -> Dict[str, Any]:
    """Per cluster: every candidate's validation accuracy on the cluster's classes, and the best.

    Returns {"choice": [name per cluster], "validation_accuracy": [{name: acc}], "nets": [...]}.
    """
    if run.data.val is None:
        raise UsageError("adaptive network selection needs a validation split: train with --val-fraction")
    xv = training.to_tensor(run.data.val, run.mean, run.std)
    yv = run.data.val.labels
    local = run.data.local
    choice: List[str] = []
    scores: List[Dict[str, float]] = []
    nets = []
    for k in range(run.hier.n_super):
        idx = np.nonzero(local[k, yv] >= 0)[0]
        want = local[k, yv[idx]]
        acc, best = {}, None
        for name in candidates:
            net = candidate(run, name, k)
            pred = training.predict_logits(net, xv[idx], len(run.hier.subclasses[k])).argmax(1).numpy()
            acc[name] = float((pred == want).mean()) if len(idx) else 0.0
            if best is None or acc[name] > acc[best[0]]:
                best = (name, net)
        assert best is not None
        choice.append(best[0])
        scores.append(acc)
        nets.append(best[1])
    return {"choice": choice, "validation_accuracy": scores, "nets": nets}
