"""The Super-Sub training pipeline: every network of the paper, as resumable stages.

A *run directory* holds everything the export needs::

    config.json  hierarchy.json  data.json
    flat.pt  super.pt  vanilla/<superclass>.pt  super_qat.pt  qat/<superclass>.pt
    metrics.json

Each stage is skipped when its checkpoint exists, so an interrupted run resumes where it
stopped.  Checkpoints are plain tensors and lists, loadable with ``weights_only=True``.
"""
from __future__ import annotations

import copy
import json
import os
import time
from dataclasses import asdict, dataclass
from typing import Callable, Dict, Optional

import numpy as np
import torch

from edgetool.runtime.errors import UsageError

from . import data as D
from . import hierarchy as H
from . import models as M
from . import qat as Q
from . import train as T
from .config_check import check_types, read_json


@dataclass
class TrainConfig:
    data: str = "sample"  # "sample", an IDX folder, an ImageFolder root with train/ and test/, or a CIFAR python archive
    pretrained: Optional[str] = None  # torchvision ResNet state_dict (.pth) to start every float network from
    hierarchy: Optional[str] = None  # JSON file; the sample ships its own
    arch: str = "resnet8"
    width_mult: float = 1.0
    image_size: Optional[int] = None  # resize for ImageFolder data
    epochs: int = 8  # flat network (and the superclass network with base_init="scratch")
    lr: float = 3e-3
    base_init: str = "flat"  # superclass network starts from the flat network's trunk ("flat") or from scratch
    base_epochs: int = 3  # superclass epochs from the flat trunk
    ft_epochs: int = 10  # every subclass fine-tune: vanilla fp32 and QAT int8 share this recipe
    ft_lr: float = 3e-3
    ft_weight_decay: float = 5e-4
    qat_epochs: int = 2  # QAT of the superclass network
    qat_lr: float = 1e-3
    qat_weight_grad: str = "clip"  # "clip": no gradient beyond +-127 codes; "ste": straight through
    delta_budget: str = "0.05"  # proximal threshold tau toward the base (0 = dense), or "patch"
    batch: int = 128
    seed: int = 0
    flip: bool = True
    pad: int = 0
    calib_batches: int = 8
    limit_train: int = 0  # keep at most this many training images (0 = all)
    limit_test: int = 0

    def save(self, path):
        tmp = path + ".tmp"
        with open(tmp, "w") as f:
            json.dump(asdict(self), f, indent=1)
        os.replace(tmp, path)

    @classmethod
    def load(cls, path):
        d = read_json(path)
        cfg = cls(**{k: v for k, v in d.items() if k in cls.__dataclass_fields__})
        cfg.check(path)
        return cfg

    def check(self, source: str = "config") -> None:
        check_types(self, source)


def load_data(cfg: TrainConfig):
    """(train, test, hierarchy) for the configured data source."""
    if cfg.data == "sample":
        train, test = D.load_sample("train"), D.load_sample("test")
        hpath = cfg.hierarchy or D.sample_hierarchy_path()
    elif cfg.data.startswith(("cifar10:", "cifar100:")) or (
            os.path.exists(cfg.data) and _cifar_archive(cfg.data) is not None):
        from . import cifar

        path = cfg.data.split(":", 1)[1] if ":" in cfg.data.split(os.sep)[0] else cfg.data
        archive = _cifar_archive(path)
        if archive is None:
            raise UsageError("{}: no CIFAR python archive here; run `edgetool data download cifar10 --dir {}`".format(path, path))
        train, hier_d = cifar.load_archive(archive, "train")
        test, _ = cifar.load_archive(archive, "test")
        hpath = None
        if cfg.hierarchy:
            hier_d = H.load(cfg.hierarchy)
    else:
        root = cfg.data
        if not os.path.isdir(root):
            raise UsageError("{}: no such data folder".format(root))
        hpath = cfg.hierarchy or os.path.join(root, "hierarchy.json")
        if not os.path.isfile(hpath):
            raise UsageError("no hierarchy: pass --hierarchy FILE or put hierarchy.json in {}".format(root))
        with open(hpath) as f:
            hd = json.load(f)
        names = hd.get("label_index")
        classes = [names[str(i)] for i in range(len(names))] if names else hd.get("fine_label_names")
        if any(f.startswith("train-images-idx3-ubyte") for f in os.listdir(root)):
            if not classes:
                raise UsageError("{}: IDX data needs label_index in the hierarchy file".format(hpath))
            train, test = D.load_idx_dir(root, "train", classes), D.load_idx_dir(root, "test", classes)
        elif os.path.isdir(os.path.join(root, "train")) and os.path.isdir(os.path.join(root, "test")):
            size = cfg.image_size or 32
            train = D.load_image_folder(os.path.join(root, "train"), size, 3, classes)
            test = D.load_image_folder(os.path.join(root, "test"), size, 3, train.classes)
        else:
            raise UsageError("{}: neither IDX files nor train/ and test/ image folders".format(root))
    hier = H.load(hpath) if hpath else hier_d
    if cfg.limit_train:
        _, keep = D.stratified_split(train.labels, min(1.0, cfg.limit_train / len(train)), cfg.seed)
        train = train.subset(keep)
    if cfg.limit_test:
        _, keep = D.stratified_split(test.labels, min(1.0, cfg.limit_test / len(test)), cfg.seed)
        test = test.subset(keep)
    return train, test, hier


def _cifar_archive(path):
    from .cifar import find_archive

    return find_archive(path)


def _save(obj, path):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = path + ".tmp"
    torch.save(obj, tmp)
    os.replace(tmp, path)


def _load(path):
    return torch.load(path, map_location="cpu", weights_only=True)


def float_state(model: M.ResNet) -> dict:
    return {"config": model.config, "state_dict": model.state_dict()}


def float_from_state(state) -> M.ResNet:
    m = M.from_config(state["config"])
    m.load_state_dict(state["state_dict"])
    m.eval()
    return m


class Run:
    """A training run directory and its tensors."""

    def __init__(self, path: str, cfg: Optional[TrainConfig] = None, progress: bool = True,
                 log: Callable[[str], None] = print):
        self.path = path
        self.progress = progress
        self.log = log
        T.init_distributed()
        cpath = os.path.join(path, "config.json")
        save = cfg is not None
        if cfg is None:
            if not os.path.isfile(cpath):
                raise UsageError("{}: not a training run (no config.json)".format(path))
            cfg = TrainConfig.load(cpath)
        self.cfg = cfg
        T.set_threads()
        torch.manual_seed(cfg.seed)
        self.train, self.test, self.hier = load_data(cfg)
        self.mean, self.std = self.train.stats()
        self.sup_of, self.loc_of = self.hier.mapping(self.train.classes)
        # The inputs are valid: only now does the run folder take them (a bad --data never lands in config.json).
        os.makedirs(path, exist_ok=True)
        if T.is_main():
            if save:
                cfg.save(cpath)
            self.hier.save(os.path.join(path, "hierarchy.json"))
        self.xtr = T.to_tensor(self.train, self.mean, self.std)
        self.xte = T.to_tensor(self.test, self.mean, self.std)
        self.ytr = torch.from_numpy(self.train.labels)
        self.yte = torch.from_numpy(self.test.labels)
        self.input_spec = {"name": "input", "shape": [self.train.channels, self.train.size, self.train.size],
                           "layout": "NCHW", "dtype": "float32", "scale": 1.0 / 255.0, "mean": self.mean,
                           "std": self.std, "color": "gray" if self.train.channels == 1 else "rgb",
                           "classes": self.train.classes}
        if T.is_main():
            with open(os.path.join(path, "data.json"), "w") as f:
                json.dump(self.input_spec, f, indent=1)
        self.aug = {"flip": cfg.flip, "pad": cfg.pad}
        self.timing: Dict[str, float] = {}

    # -- helpers --------------------------------------------------------------------------
    def ck(self) -> Optional[str]:
        """Epoch checkpoint of the stage being trained (resume an interrupted stage)."""
        return getattr(self, "_ckpt", None)

    def p(self, *parts) -> str:
        return os.path.join(self.path, *parts)

    def sub_mask(self, k: int, split="train"):
        y = self.ytr if split == "train" else self.yte
        return torch.from_numpy(self.sup_of)[y] == k

    def new_model(self, head: int) -> M.ResNet:
        m = M.build(self.cfg.arch, self.train.channels, head, self.cfg.width_mult)
        if self.cfg.pretrained:
            if not os.path.isfile(self.cfg.pretrained):
                raise UsageError("{}: no such pretrained checkpoint".format(self.cfg.pretrained))
            state = torch.load(self.cfg.pretrained, map_location="cpu", weights_only=True)
            if isinstance(state, dict) and "state_dict" in state:
                state = state["state_dict"]
            M.load_torchvision_weights(m, state)
        return m

    def _stage(self, name: str, path: str, make: Callable[[], object]):
        if os.path.isfile(path):
            return _load(path)
        t0 = time.perf_counter()
        os.makedirs(os.path.dirname(path), exist_ok=True)
        outer, self._ckpt = self.ck(), path + ".partial"
        try:
            state = make()  # may train the stages it depends on, each with its own checkpoint
        finally:
            self._ckpt = outer
        ckpt = path + ".partial"
        if T.is_main():
            _save(state, path)
            if os.path.isfile(ckpt):
                os.remove(ckpt)
        T.barrier()
        if not T.is_main():
            return state
        self.timing[name] = time.perf_counter() - t0
        tpath = self.p("timing.json")
        saved = {}
        if not T.is_main():
            return state
        if os.path.isfile(tpath):
            with open(tpath) as f:
                saved = json.load(f)
        saved[name] = self.timing[name]
        with open(tpath, "w") as f:
            json.dump(saved, f, indent=1)
        return state

    def train_seconds(self) -> Dict[str, float]:
        """Seconds each stage took when it was trained (kept across resumed runs)."""
        tpath = self.p("timing.json")
        if not os.path.isfile(tpath):
            return {}
        with open(tpath) as f:
            return json.load(f)

    # -- stages ---------------------------------------------------------------------------
    def flat(self) -> M.ResNet:
        def make():
            m = self.new_model(len(self.train.classes))
            T.fit(m, self.xtr, self.ytr, self.cfg.epochs, self.cfg.lr, self.cfg.batch, seed=self.cfg.seed,
                  desc="flat network", aug=self.aug, progress=self.progress, checkpoint=self.ck())
            return float_state(m)

        return float_from_state(self._stage("flat", self.p("flat.pt"), make))

    def superclass(self) -> M.ResNet:
        """The base network: superclass labels, from the flat network's trunk by default."""
        def make():
            ys = torch.from_numpy(self.sup_of)[self.ytr]
            if self.cfg.base_init == "flat":
                m = self.base_from_flat()
                epochs = self.cfg.base_epochs
            else:
                m = self.new_model(self.hier.head_width)
                epochs = self.cfg.epochs
            T.fit(m, self.xtr, ys, epochs, self.cfg.lr, self.cfg.batch, n_valid=self.hier.n_super,
                  seed=self.cfg.seed, desc="superclass network", aug=self.aug, progress=self.progress,
                  checkpoint=self.ck())
            return float_state(m)

        return float_from_state(self._stage("superclass", self.p("super.pt"), make))

    def base_from_flat(self) -> M.ResNet:
        """The flat network's trunk under a head of width H whose superclass row k starts as
        the mean of the flat head's rows of k's classes (rows beyond N keep their fresh init:
        the subclass networks train them)."""
        flat = self.flat()
        m = self.new_model(self.hier.head_width)
        sd = {k: v for k, v in flat.state_dict().items() if not k.startswith("fc.")}
        m.load_state_dict(sd, strict=False)
        with torch.no_grad():
            for k in range(self.hier.n_super):
                rows = torch.from_numpy(np.nonzero(self.sup_of == k)[0])
                m.fc.weight[k] = flat.fc.weight[rows].mean(0)
                m.fc.bias[k] = flat.fc.bias[rows].mean(0)
        return m

    def _fine_tune(self, net, k: int, desc: str, after_step=None) -> None:
        """The one subclass fine-tune recipe, shared by the vanilla and the QAT networks."""
        mask = self.sub_mask(k)
        T.fit(net, self.xtr[mask], torch.from_numpy(self.loc_of)[self.ytr[mask]], self.cfg.ft_epochs,
              self.cfg.ft_lr, self.cfg.batch, n_valid=len(self.hier.subclasses[k]),
              weight_decay=self.cfg.ft_weight_decay, seed=self.cfg.seed + k + 1, desc=desc, aug=self.aug,
              progress=self.progress, checkpoint=self.ck(), after_step=after_step)

    def vanilla(self, k: int) -> M.ResNet:
        """Vanilla fp32 subclass network k, fine-tuned from the superclass network."""
        name = self.hier.superclasses[k]

        def make():
            m = copy.deepcopy(self.superclass())
            self._fine_tune(m, k, "vanilla subclass [{}]".format(name))
            return float_state(m)

        return float_from_state(self._stage("vanilla:{}".format(name), self.p("vanilla", "{}.pt".format(k)), make))

    def super_qat(self) -> Q.QATNet:
        def make():
            m = self.superclass()
            g = torch.Generator().manual_seed(self.cfg.seed)
            perm = torch.randperm(len(self.ytr), generator=g)
            calib = [self.xtr[perm[i * self.cfg.batch:(i + 1) * self.cfg.batch]] for i in range(self.cfg.calib_batches)]
            calib = [c for c in calib if len(c)]
            net = Q.from_float(m, calib)
            ys = torch.from_numpy(self.sup_of)[self.ytr]
            if self.cfg.qat_epochs:
                T.fit(net, self.xtr, ys, self.cfg.qat_epochs, self.cfg.qat_lr / 2, self.cfg.batch,
                      n_valid=self.hier.n_super, weight_decay=0.0, seed=self.cfg.seed,
                      desc="QAT superclass network", aug=self.aug, progress=self.progress, checkpoint=self.ck())
            return net.state()

        return Q.QATNet.from_state(self._stage("super_qat", self.p("super_qat.pt"), make))

    def sub_qat(self, k: int) -> Q.QATNet:
        """QAT fine-tune of subclass network k from the QAT superclass network, scales frozen,
        under the delta budget (proximal step toward the base, or a BN/head patch)."""
        name = self.hier.superclasses[k]

        def make():
            base = self.super_qat()
            net = copy.deepcopy(base)
            net.weight_grad = self.cfg.qat_weight_grad
            mode, tau = Q.parse_budget(self.cfg.delta_budget)
            if mode == "patch":
                Q.freeze_for_patch(net)
            step = Q.ProximalStep(net, base, tau) if mode == "prox" else None
            self._fine_tune(net, k, "QAT subclass [{}]".format(name), after_step=step)
            return net.state()

        return Q.QATNet.from_state(self._stage("qat:" + name, self.p("qat", "{}.pt".format(k)), make))

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
        return T.preprocess_numpy(self.test.images[:n], self.mean, self.std)

    def export(self, out_dir: str, codec: str = "zstd", force: bool = False) -> dict:
        from edgetool.export.atomic import check_out
        from edgetool.export.bundle import write_bundle

        check_out(out_dir, force)  # before any network is loaded or trained
        base = self.super_qat()
        subs = [self.sub_qat(k) for k in range(self.hier.n_super)]
        return write_bundle(out_dir, base, subs, self.hier, self.input_spec, codec=codec, samples=self.samples(),
                            force=force)
