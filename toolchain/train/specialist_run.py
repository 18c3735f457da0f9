"""A transfer run's specialists stage (``run``: a :class:`.transfer.TransferRun`): train them,
decide which ship (:mod:`.specialists`), and hand export the networks of each superclass."""

from __future__ import annotations

import json
import os
import time
from typing import Optional

import numpy as np
import torch

from edgetool.runtime.errors import UsageError
from edgetool.runtime.files import write_json_atomic

from . import efficientnet as E
from . import qat
from .checkpoints import load_checkpoint, save_checkpoint
from .specialists import (
    ALPHA, LR_FACTOR, MIN_IMAGES, class_embeddings, decide, embedding_hierarchy, folds, log, pooled_features,
    rows_of, summary, superclass_of_class, train_specialist,
)  # fmt: skip
from .tail import tail_qatnet


def train_run(self) -> Optional[dict]:
    """Tail specialists (:mod:`.specialists`) of ``cfg.specialists`` superclasses, with the
    keep-base decision of each (``specialists.json``; each specialist in ``specialists/``).
    None when the run trains none."""
    from edgetool.runtime.files import slug

    if not self.cfg.specialists:
        return None
    path = self.file("specialists.json")
    if os.path.isfile(path):
        return _recorded(self, path)
    if not len(self.val_idx):
        raise UsageError("--specialists needs a validation split (--val-fraction): it decides which ship")
    base = self.int8()
    model = self.tail()
    t0 = time.perf_counter()
    assert self.split is not None  # tail() refuses a run without a split
    _, _, boundary = E.split_ops(model.to_ir()[0], self.split)
    views, xval, _ = self.features(self.cache(model))
    ytr, yval, _ = self.labels()
    hier = _hierarchy(self, model, views[0], ytr)
    sup, rows = superclass_of_class(hier, self.classes), rows_of(hier, self.classes)
    fold_a, fold_b = folds(yval.numpy(), self.cfg.seed + 2)
    base_tail = tail_qatnet(base, boundary).eval()
    decisions = {}
    os.makedirs(self.file("specialists"), exist_ok=True)
    for k, name in enumerate(hier.superclasses):
        ckpt = self.file("specialists", slug(name) + ".pt")
        if os.path.isfile(ckpt):
            net = qat.QATNet.from_state(load_checkpoint(ckpt))
        else:
            local = {c: j for j, c in enumerate(rows[k])}
            mine = np.isin(ytr.numpy(), rows[k])
            ya = yval[fold_a]
            a_mine = np.nonzero(np.isin(ya.numpy(), rows[k]))[0]
            val = None
            if len(a_mine):
                val = (xval[fold_a][a_mine], torch.as_tensor([local[int(c)] for c in ya[a_mine]]))
            net, _ = train_specialist(
                base, boundary, rows[k], [v[mine] for v in views],
                torch.as_tensor([local[int(c)] for c in ytr[mine]]), val, self.cfg.ft_epochs,
                self.cfg.tail_lr * LR_FACTOR, self.cfg.batch, self.cfg.seed + k,
                "specialist [{}]".format(name), self.progress, self.cfg.budget(),
            )  # fmt: skip
            save_checkpoint(net.state(), ckpt)
        spec_tail = tail_qatnet(net, boundary).eval()
        decisions[name] = decide(base_tail, spec_tail, xval[fold_b], yval[fold_b], sup, k, rows[k])
    out = {
        "hierarchy": hier.to_dict(),
        "validation": {"choose": int(len(fold_a)), "decide": int(len(fold_b))},
        "rule": {"min_images": MIN_IMAGES, "alpha": ALPHA},
        "delta_budget": self.cfg.delta_budget,
        "superclasses": decisions,
    }
    write_json_atomic(path, out)
    self.timing["specialists"] = time.perf_counter() - t0
    self._metrics({})
    log.info("%s", summary(decisions))
    return out


def _recorded(self, path: str) -> dict:
    """The specialists this run trained before, if they were trained under its delta budget."""
    with open(path) as f:
        rec = json.load(f)
    trained = rec.get("delta_budget", self.cfg.delta_budget)
    if str(trained) != str(self.cfg.delta_budget):
        raise UsageError(
            "{}: its specialists were trained under --delta-budget {}, not {}; train them in a new run folder".format(
                self.path, trained, self.cfg.delta_budget
            )
        )
    return rec


def _hierarchy(self, model: E.EfficientNetLite, train_feats, ytr):
    """The given hierarchy, or k-means of the float network's per-class mean features."""
    if self.cfg.hierarchy not in (None, "single") or (
        self.cfg.hierarchy is None and os.path.isfile(os.path.join(self.cfg.data, "hierarchy.json"))
    ):
        return self.hierarchy()
    k = int(self.cfg.specialists)
    if not 2 <= k <= len(self.classes):
        raise UsageError("--specialists {}: between 2 and {} superclasses".format(k, len(self.classes)))
    assert self.split is not None
    emb = class_embeddings(pooled_features(model, train_feats, self.split), ytr.numpy(), len(self.classes))
    return embedding_hierarchy(emb, self.classes, k, self.cfg.seed)


def bundle_nets(self, net: qat.QATNet):
    """(hierarchy, the network of each superclass, the names with a specialist) for export."""
    from edgetool.runtime.files import slug

    from ..hierarchy import spec as hierarchy

    rec = train_run(self)
    if rec is None:
        hier = self.hierarchy()
        return hier, [net] * hier.n_super, []
    hier = hierarchy.from_dict(rec["hierarchy"], self.file("specialists.json"))
    subs, names = [], []
    for name in hier.superclasses:
        if rec["superclasses"][name]["ship"]:
            subs.append(qat.QATNet.from_state(load_checkpoint(self.file("specialists", slug(name) + ".pt"))))
            names.append(name)
        else:
            subs.append(net)
    return hier, subs, names
