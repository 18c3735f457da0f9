"""The Super-Sub training pipeline: every network of the paper, as resumable stages.

A *run directory* holds everything the export needs::

    config.json  hierarchy.json  data.json
    flat.pt  super.pt  vanilla/<superclass>.pt  super_qat.pt  qat/<superclass>.pt
    metrics.json

Each stage is skipped when its checkpoint exists, so an interrupted run resumes where it
stopped.  Checkpoints are plain tensors and lists, loadable with ``weights_only=True``.

``Run(path, cfg, data)`` only holds its arguments; ``Run.open`` is the one place that joins
a torchrun group, writes or reads config.json, seeds, loads the data and records it.
"""

from __future__ import annotations

import copy
import math
import json
import logging
import os
import time
from typing import Callable, Dict, Optional

import numpy as np
import torch

from edgetool.runtime.errors import UsageError

from . import delta_budget, models, qat, resume, update
from . import device as devices
from . import fit as training
from .checkpoints import float_from_state, float_state, load_checkpoint, save_checkpoint
from .run_data import RunData, TrainConfig, load_data

__all__ = ["Run", "RunData", "TrainConfig", "load_data"]
log = logging.getLogger(__name__)


class Run:
    """A training run directory and its tensors."""

    def __init__(self, path: str, cfg: TrainConfig, data: RunData, progress: bool = True):
        self.path, self.cfg, self.data, self.progress = path, cfg, data, progress
        self.train, self.test, self.hier = data.train, data.test, data.hier
        self.mean, self.std, self.input_spec = data.mean, data.std, data.input_spec
        self.sup_of, self.loc_of = data.sup_of, data.loc_of
        self.xtr, self.xte, self.ytr, self.yte = data.xtr, data.xte, data.ytr, data.yte
        self.aug = {"flip": data.augmentation["flip"], "pad": data.augmentation["pad"]}
        self.timing: Dict[str, float] = {}
        self._ckpt: Optional[str] = None

    @classmethod
    def open(cls, path: str, cfg: Optional[TrainConfig] = None, progress: bool = True) -> "Run":
        """Open the run at *path* (its config.json when *cfg* is None), or start one with *cfg*."""
        training.init_distributed()
        cpath = os.path.join(path, "config.json")
        save = cfg is not None
        if cfg is None:
            if not os.path.isfile(cpath):
                raise UsageError("{}: not a training run (no config.json)".format(path))
            cfg = TrainConfig.load(cpath)
        else:
            resume.check_resume(path, cfg)
        devices.set_threads()
        log.info("training on %s", devices.describe())
        torch.manual_seed(cfg.seed)
        data = RunData.load(cfg)
        # The inputs are valid: only now does the run folder take them (a bad --data never lands in config.json).
        os.makedirs(path, exist_ok=True)
        if training.is_main():
            if save:
                cfg.save(cpath)
            data.hier.save(os.path.join(path, "hierarchy.json"))
            with open(os.path.join(path, "data.json"), "w") as f:
                json.dump(data.record(), f, indent=1)
        return cls(path, cfg, data, progress)

    # -- helpers --------------------------------------------------------------------------
    def stage_checkpoint(self) -> Optional[str]:
        """Epoch checkpoint of the stage being trained (resume an interrupted stage)."""
        return self._ckpt

    def file(self, *parts) -> str:
        return os.path.join(self.path, *parts)

    def recipe(self, epochs: int, lr: float, weight_decay: float = 5e-4) -> training.Recipe:
        return training.Recipe(epochs, lr, self.cfg.batch, weight_decay, aug=self.aug)

    def hooks(self, desc: str, after_step=None) -> training.FitHooks:
        return training.FitHooks(desc, self.progress, self.stage_checkpoint(), after_step=after_step)

    def sub_mask(self, k: int, split="train"):
        """Images of subclass network k's classes (with overlapping clusters, shared ones too)."""
        y = self.ytr if split == "train" else self.yte
        return torch.from_numpy(self.data.local[k] >= 0)[y]

    def new_model(self, head: int, width_mult: Optional[float] = None) -> models.ResNet:
        width = self.cfg.width_mult if width_mult is None else width_mult
        m = models.build(self.cfg.arch, self.train.channels, head, width)
        if self.cfg.pretrained and width == self.cfg.width_mult:  # a wider control has no such weights
            from .pretrained import load_pretrained

            load_pretrained(m, self.cfg.pretrained, self.cfg.arch, self.cfg.pretrained_partial)
        return m

    def stage(self, name: str, path: str, make: Callable[[], object]):
        if os.path.isfile(path):
            log.debug("stage %s: %s (trained before)", name, path)
            return load_checkpoint(path)
        log.info("stage %s: training%s", name, " (resuming)" if os.path.isfile(path + ".partial") else "")
        t0 = time.perf_counter()
        os.makedirs(os.path.dirname(path), exist_ok=True)
        outer, self._ckpt = self.stage_checkpoint(), path + ".partial"
        try:
            state = make()  # may train the stages it depends on, each with its own checkpoint
        finally:
            self._ckpt = outer
        ckpt = path + ".partial"
        if training.is_main():
            save_checkpoint(state, path)
            if os.path.isfile(ckpt):
                os.remove(ckpt)
        training.barrier()
        if not training.is_main():
            return state
        self.timing[name] = time.perf_counter() - t0
        tpath = self.file("timing.json")
        saved = {}
        if os.path.isfile(tpath):
            with open(tpath) as f:
                saved = json.load(f)
        saved[name] = self.timing[name]
        with open(tpath, "w") as f:
            json.dump(saved, f, indent=1)
        return state

    def train_seconds(self) -> Dict[str, float]:
        """Seconds each stage took when it was trained (kept across resumed runs)."""
        tpath = self.file("timing.json")
        if not os.path.isfile(tpath):
            return {}
        with open(tpath) as f:
            return json.load(f)

    # -- stages ---------------------------------------------------------------------------
    def flat(self) -> models.ResNet:
        def make():
            m = self.new_model(len(self.train.classes))
            training.fit(
                m,
                self.xtr,
                self.ytr,
                self.recipe(self.cfg.epochs, self.cfg.lr),
                seed=self.cfg.seed,
                hooks=self.hooks("flat network"),
            )
            return float_state(m)

        return float_from_state(self.stage("flat", self.file("flat.pt"), make))

    def superclass(self) -> models.ResNet:
        """The base network: superclass labels, from the flat network's trunk by default."""

        def make():
            ys = torch.from_numpy(self.sup_of)[self.ytr]
            if self.cfg.base_init == "flat":
                m = self.base_from_flat()
                epochs = self.cfg.base_epochs
            else:
                m = self.new_model(self.hier.head_width)
                epochs = self.cfg.epochs
            training.fit(
                m,
                self.xtr,
                ys,
                self.recipe(epochs, self.cfg.lr),
                n_valid=self.hier.n_super,
                seed=self.cfg.seed,
                hooks=self.hooks("superclass network"),
            )
            return float_state(m)

        return float_from_state(self.stage("superclass", self.file("super.pt"), make))

    def base_from_flat(self) -> models.ResNet:
        """The flat network's trunk under a head of width H whose superclass row k starts as
        the mean of the flat head's rows of k's classes (rows beyond N keep their fresh init:
        the subclass networks train them)."""
        flat = self.flat()
        m = self.new_model(self.hier.head_width)
        models.load_trunk(m, flat.state_dict())
        with torch.no_grad():
            for k in range(self.hier.n_super):
                rows = torch.from_numpy(np.nonzero(self.sup_of == k)[0])
                m.fc.weight[k] = flat.fc.weight[rows].mean(0)
                m.fc.bias[k] = flat.fc.bias[rows].mean(0)
        return m

    def fine_tune_data(self, k: int):
        """(images, local labels) of subclass network k's fine-tune, with ``ft_outliers`` x as many
        images of other superclasses (a fixed draw per network) labelled OUTLIER or "not mine"."""
        mask = self.sub_mask(k)
        y = torch.from_numpy(self.data.local[k])[self.ytr[mask]]
        pool = torch.nonzero(~mask).flatten()
        x, y = training.with_outliers(self.xtr[mask], y, self.xtr, pool, self.cfg.ft_outliers, self.cfg.seed * 1009 + k)
        return x, training.not_mine_labels(y, len(self.hier.subclasses[k])) if self.hier.not_mine else y

    def fine_tune_size(self, k: int) -> int:
        """Images in subclass network k's fine-tune (:meth:`fine_tune_data`), counted without building it."""
        own = int(self.sub_mask(k).sum())  # the other superclasses' images are the outlier pool
        return own + training.outlier_count(own, len(self.ytr) - own, self.cfg.ft_outliers)

    def fine_tune(self, net, k: int, desc: str, after_step=None, data=None) -> None:
        """The one subclass fine-tune recipe, shared by the vanilla and the QAT networks."""
        x, y = data if data is not None else self.fine_tune_data(k)
        recipe = self.recipe(self.cfg.ft_epochs, self.cfg.ft_lr, weight_decay=self.cfg.ft_weight_decay)
        n_valid, hooks = self.hier.outputs(k), self.hooks(desc, after_step)
        training.fit(net, x, y, recipe, n_valid=n_valid, seed=self.cfg.seed + k + 1, hooks=hooks)

    def vanilla(self, k: int) -> models.ResNet:
        """Vanilla fp32 subclass network k, fine-tuned from the superclass network."""
        name = self.hier.superclasses[k]

        def make():
            m = copy.deepcopy(self.superclass())
            self.fine_tune(m, k, "vanilla subclass [{}]".format(name))
            return float_state(m)

        return float_from_state(self.stage("vanilla:{}".format(name), self.file("vanilla", "{}.pt".format(k)), make))

    def quantize(self, m, labels: torch.Tensor, n_valid: int, desc: str) -> qat.QATNet:
        """Calibrate float network *m* on training batches, then QAT it on *labels* (the base's recipe)."""
        g = torch.Generator().manual_seed(self.cfg.seed)
        perm = torch.randperm(len(self.ytr), generator=g)
        calib = [self.xtr[perm[i * self.cfg.batch : (i + 1) * self.cfg.batch]] for i in range(self.cfg.calib_batches)]
        net = qat.from_float(m, [c for c in calib if len(c)])
        if self.cfg.qat_epochs:
            recipe = self.recipe(self.cfg.qat_epochs, self.cfg.qat_lr / 2, weight_decay=0.0)
            training.fit(net, self.xtr, labels, recipe, n_valid=n_valid, seed=self.cfg.seed, hooks=self.hooks(desc))
        return net

    def super_qat(self) -> qat.QATNet:
        def make():
            ys = torch.from_numpy(self.sup_of)[self.ytr]
            if self.cfg.update_of:
                return update.update_base(self, ys).state()
            return self.quantize(self.superclass(), ys, self.hier.n_super, "QAT superclass network").state()

        return qat.QATNet.from_state(self.stage("super_qat", self.file("super_qat.pt"), make))

    def flat_control(self, kind: str) -> qat.QATNet:
        """The int8 flat control *kind* ("budget" or "wide"), trained once (:mod:`.controls`)."""
        from .controls import flat_control

        return flat_control(self, kind)

    def sub_qat(self, k: int) -> qat.QATNet:
        """QAT fine-tune of subclass network k from the QAT superclass network, scales frozen,
        under the delta budget (proximal step or top share toward the base, or a BN/head patch)."""
        name = self.hier.superclasses[k]

        def make():
            base = self.super_qat()
            net = update.deployed(self, "qat", "{}.pt".format(k)) if self.cfg.update_of else copy.deepcopy(base)
            net.weight_grad = self.cfg.qat_weight_grad
            data = self.fine_tune_data(k)
            steps = self.cfg.ft_epochs * max(1, math.ceil(len(data[1]) / self.cfg.batch))
            step = delta_budget.apply_budget(net, base, self.cfg.budget(), steps)
            self.fine_tune(net, k, "QAT subclass [{}]".format(name), after_step=step, data=data)
            return net.state()

        return qat.QATNet.from_state(self.stage("qat:" + name, self.file("qat", "{}.pt".format(k)), make))

    def train_all(self, with_flat=True, with_vanilla=True, with_qat_subclasses=True) -> None:
        if with_flat:
            self.flat()
        self.superclass()
        if with_vanilla:
            for k in range(self.hier.n_super):
                self.vanilla(k)
        self.super_qat()
        if with_qat_subclasses:
            for k in range(self.hier.n_super):
                self.sub_qat(k)

    def samples(self, n: int = 8) -> np.ndarray:
        return training.preprocess_numpy(self.test.images[:n], self.mean, self.std)

    def export(self, out_dir: str, codec: str = "zstd", force: bool = False, **options) -> dict:
        """This run's bundle (:func:`.run_export.export_run`: *routing_data*, *model*, *release*)."""
        from ..run_export import export_run

        return export_run(self, out_dir, codec, force, **options)
