"""A pretrained edge backbone fine-tuned on your photos: a frozen trunk computed once, a tail
trained in minutes on a CPU, and the whole network int8 as a flat bundle.

A *transfer run* (``edgetool train RUN --data DIR --arch efficientnet-lite0 --pretrained
imagenet``) holds::

    config.json  data.json  cache/  tail.pt  int8.pt  metrics.json

* **Data:** an ImageFolder root with ``train/`` and ``test/``; ``--val-fraction`` of the training
  images (stratified) is held out, and every choice (the epoch kept) is made on it.
* **Preprocessing:** the model's (:data:`.efficientnet.INPUT_SPEC`): the shorter side resized to
  size / 0.875, a centre crop, inputs in [-1, 1], read by the device's own code
  (:mod:`edgetool.runtime.preprocess`), so training, ``classify``, ``camera`` and ``serve`` see
  the same pixels.  The bundle's manifest records it.
* **Trunk cache:** the frozen trunk (the stem and the blocks up to the split, BatchNorm in eval
  form) runs once per training image (and once more on its mirror image with ``--augment flip``)
  and once per test image; its outputs are stored in float16 under ``cache/`` (or ``--cache``),
  keyed by the trunk's weights, the split, the input spec, the augmentation and the image files.
  An epoch then costs only the tail.
* **Tail:** the layers after the split, AdamW with cosine decay, no weight decay on BatchNorm and
  biases; the epoch with the best validation accuracy is kept.
* **int8:** the whole network, trunk included, with TensorRT's explicit-quantization rules:
  weight scales per output channel, activation scales calibrated on training images, then the
  tail's QAT epochs on the cached trunk outputs (``--qat-epochs``; 0: calibration only).
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import math
import os
import time
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from edgetool.runtime.errors import UsageError
from edgetool.runtime.files import atomic_path, write_json_atomic

from . import efficientnet as E
from . import qat
from .checkpoints import float_state, load_checkpoint, save_checkpoint

log = logging.getLogger(__name__)
KIND = "transfer"
CALIB_IMAGES = 256  # training images the activation scales are calibrated on


def resolve_split(arch: str, freeze: str, model: E.EfficientNetLite) -> Optional[str]:
    """The part after which the network is split (None: nothing frozen, the whole network trains)."""
    if freeze == "none":
        return None
    name = E.default_split(arch) if freeze == "auto" else freeze
    parts = model.part_names()[:-1]  # fc always trains
    if name not in parts:
        raise UsageError(
            "--freeze {}: not a part of {} (choose auto, none, or one of {} ... {})".format(
                freeze, arch, ", ".join(parts[:3]), ", ".join(parts[-3:])
            )
        )
    return name


def input_spec(size: int) -> dict:
    return dict(
        name="input", shape=[3, size, size], layout="NCHW", dtype="float32", color="rgb", **copy.deepcopy(E.INPUT_SPEC)
    )


@dataclass
class Images:
    """Image files and their labels."""

    paths: List[str]
    labels: np.ndarray

    def subset(self, idx) -> "Images":
        idx = np.asarray(idx, dtype=np.int64)
        return Images([self.paths[i] for i in idx], self.labels[idx])


def list_data(root: str, limit_train: int = 0, limit_test: int = 0, seed: int = 0):
    """(train, test, classes) of an ImageFolder root with train/ and test/."""
    from ..data.folders import folder_samples, stratified_split

    if not (os.path.isdir(os.path.join(root, "train")) and os.path.isdir(os.path.join(root, "test"))):
        raise UsageError("{}: a pretrained backbone trains on photos: give a folder with train/ and test/ "
                         "image folders (one folder per class in each)".format(root))  # fmt: skip
    tr, classes = folder_samples(os.path.join(root, "train"), None)
    te, _ = folder_samples(os.path.join(root, "test"), classes)
    train = Images([p for p, _ in tr], np.asarray([y for _, y in tr], dtype=np.int64))
    test = Images([p for p, _ in te], np.asarray([y for _, y in te], dtype=np.int64))
    if limit_train and limit_train < len(train.paths):
        _, keep = stratified_split(train.labels, limit_train / len(train.paths), seed)
        train = train.subset(np.sort(keep))
    if limit_test and limit_test < len(test.paths):
        _, keep = stratified_split(test.labels, limit_test / len(test.paths), seed)
        test = test.subset(np.sort(keep))
    if not train.paths or not test.paths:
        raise UsageError("{}: no training or no test images".format(root))
    return train, test, list(classes)


def read_batch(paths: Sequence[str], spec: dict, flip: bool = False) -> torch.Tensor:
    """The network inputs of *paths*, read as the device reads them (optionally mirrored)."""
    from edgetool.runtime.preprocess import load_image, normalize, to_input_array

    from ..data.folders import read_all

    arrays = read_all(list(paths), lambda p: to_input_array(load_image(p), spec))
    x = np.stack(arrays)
    if flip:
        x = np.ascontiguousarray(x[:, :, ::-1])
    return torch.from_numpy(normalize(x, spec))


def trunk_fingerprint(model: E.EfficientNetLite, split: str) -> str:
    """sha256 of the trunk's tensors (names, shapes and bytes), up to and including *split*."""
    h = hashlib.sha256()
    names = model.part_names()
    keep = names[: names.index(split) + 1]
    for k, v in model.state_dict().items():
        if k.split(".")[0] in ("stem", "head") and k.split(".")[0] not in keep:
            continue
        if k.startswith("blocks.") and ".".join(k.split(".")[:2]) not in keep:
            continue
        if k.startswith("fc."):
            continue
        h.update(k.encode())
        h.update(str(tuple(v.shape)).encode())
        h.update(v.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def reader_fingerprint(spec: dict) -> str:
    """sha256 of what the device's preprocessing makes of probe images of assorted sizes and aspect
    ratios under *spec*, and of the decoder's code: a change in either recomputes the cache."""
    import inspect

    from edgetool.runtime import preprocess as P

    h = hashlib.sha256(inspect.getsource(P.load_image).encode())
    rng = np.random.default_rng(0)
    for shape in ((37, 53, 3), (480, 640, 3), (300, 200, 3), (224, 224, 3), (1001, 333, 3), (90, 120, 1)):
        image = rng.integers(0, 256, shape, dtype=np.uint8)
        h.update(P.normalize(P.to_input_array(image, spec)[None], spec).tobytes())
    return h.hexdigest()


def files_fingerprint(paths: Sequence[str]) -> str:
    h = hashlib.sha256()
    for p in paths:
        st = os.stat(p)
        h.update("{}\0{}\0{}\n".format(os.path.abspath(p), st.st_size, st.st_mtime_ns).encode())
    return h.hexdigest()


class TrunkCache:
    """The frozen trunk's outputs, computed once per image set and kept in float16 files."""

    def __init__(self, folder: str, model: E.EfficientNetLite, split: str, spec: dict, batch: int, progress: bool):
        self.folder, self.model, self.split, self.spec = folder, model, split, spec
        self.batch, self.progress = batch, progress
        self.trunk_sha = trunk_fingerprint(model, split)
        self.seconds = 0.0  # spent computing (not reading) trunk outputs in this process

    def key(self, images: Images, flip: bool) -> str:
        what = {
            "reader": reader_fingerprint(self.spec),
            "trunk": self.trunk_sha,
            "split": self.split,
            "spec": {k: self.spec[k] for k in sorted(self.spec)},
            "flip": flip,
            "files": files_fingerprint(images.paths),
        }
        return hashlib.sha256(json.dumps(what, sort_keys=True).encode()).hexdigest()[:24]

    def get(self, images: Images, name: str, flip: bool = False) -> torch.Tensor:
        path = os.path.join(self.folder, "{}{}-{}.npy".format(name, "-flip" if flip else "", self.key(images, flip)))
        if os.path.isfile(path):
            try:
                a = np.load(path, mmap_mode="r", allow_pickle=False)
                if a.shape[0] == len(images.paths) and a.dtype == np.float16:
                    return torch.from_numpy(np.asarray(a, dtype=np.float32))
            except (OSError, ValueError):
                pass  # a damaged cache file is computed again
            log.warning("trunk cache %s is unreadable; computing it again", path)
        out = self._compute(images, "trunk pass: {}{}".format(name, " (mirrored)" if flip else ""), flip)
        os.makedirs(self.folder, exist_ok=True)
        with atomic_path(path) as tmp:
            with open(tmp, "wb") as f:
                np.save(f, out, allow_pickle=False)
        return torch.from_numpy(out.astype(np.float32))

    @torch.no_grad()
    def _compute(self, images: Images, desc: str, flip: bool) -> np.ndarray:
        from .progress import FitProgress

        t0 = time.perf_counter()
        m = self.model.eval().to(memory_format=torch.channels_last)  # channels-last: faster depthwise convs on a CPU
        n = len(images.paths)
        steps = max(1, math.ceil(n / self.batch))
        bar = FitProgress(desc, 1, 0, steps, self.progress)
        chunks = []
        for b in range(steps):
            x = read_batch(images.paths[b * self.batch : (b + 1) * self.batch], self.spec, flip)
            y = m.trunk_forward(x.contiguous(memory_format=torch.channels_last), self.split)
            chunks.append(y.contiguous().numpy().astype(np.float16))
            bar.step(0, 0.0)
        seconds = time.perf_counter() - t0
        bar.line("{}: {} images in {:.1f} s ({:.1f} images/s), cached".format(desc, n, seconds, n / max(seconds, 1e-9)))
        bar.close()
        self.model.to(memory_format=torch.contiguous_format)
        self.seconds += seconds
        return np.concatenate(chunks)


class Tail(nn.Module):
    """The layers of a network after its split (BatchNorm trains here), on cached trunk outputs."""

    def __init__(self, model: E.EfficientNetLite, split: str):
        super().__init__()
        self.model, self.split = model, split

    def forward(self, x):
        return self.model.tail_forward(x, self.split)


def freeze_trunk(model: E.EfficientNetLite, split: Optional[str]) -> None:
    """No gradient for the trunk's parameters; the tail's train."""
    for p in model.parameters():
        p.requires_grad_(True)
    if split is None:
        return
    names = model.part_names()
    for name, m in model.parts():
        if names.index(name) <= names.index(split):
            for p in m.parameters():
                p.requires_grad_(False)


def param_groups(module: nn.Module, weight_decay: float):
    """AdamW groups: weight decay on convolution and linear weights only (not on BatchNorm or biases)."""
    decay = [p for p in module.parameters() if p.requires_grad and p.dim() > 1]
    rest = [p for p in module.parameters() if p.requires_grad and p.dim() <= 1]
    return [{"params": decay, "weight_decay": weight_decay}, {"params": rest, "weight_decay": 0.0}]


def train_tail(
    net: nn.Module,
    feats: Sequence[torch.Tensor],
    y: torch.Tensor,
    val: Optional[Tuple[torch.Tensor, torch.Tensor]],
    epochs: int,
    lr: float,
    batch: int,
    seed: int,
    desc: str,
    progress: bool,
    weight_decay: float = 1e-4,
) -> dict:
    """Train *net* on cached trunk outputs: each step takes every image in one of its *feats*
    views (the image, its mirror), drawn at random.  With *val*, the epoch of the best validation
    accuracy is kept.  Returns the history."""
    from .progress import FitProgress

    opt = torch.optim.AdamW(param_groups(net, weight_decay), lr=lr)
    steps = max(1, math.ceil(len(y) / batch))
    total = epochs * steps
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1 + math.cos(math.pi * min(s, total) / total)))
    gen = torch.Generator().manual_seed(seed)
    bar = FitProgress(desc, epochs, 0, steps, progress)
    hist: Dict[str, Any] = {"loss": [], "train_accuracy": [], "val_accuracy": []}
    best, best_acc = None, -1.0
    for epoch in range(epochs):
        net.train()
        t0 = time.perf_counter()
        perm = torch.randperm(len(y), generator=gen)
        view = torch.randint(0, len(feats), (len(y),), generator=gen)
        loss_sum, correct = 0.0, 0
        for b in range(steps):
            idx = perm[b * batch : (b + 1) * batch]
            xb = feats[0][idx]
            if len(feats) > 1:  # each image as itself or as its mirror
                xb = torch.where((view[idx] == 1).reshape(-1, 1, 1, 1), feats[1][idx], xb)
            out = net(xb)
            loss = F.cross_entropy(out, y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            loss_sum += float(loss.detach())
            correct += int((out.detach().argmax(1) == y[idx]).sum())
            bar.step(epoch, float(loss.detach()))
        hist["loss"].append(loss_sum / steps)
        hist["train_accuracy"].append(correct / len(y))
        if val is not None:
            acc = accuracy(net, *val)
            hist["val_accuracy"].append(acc)
            if acc > best_acc:
                best, best_acc = copy.deepcopy(net.state_dict()), acc
        bar.epoch_done(epoch + 1, hist["loss"][-1], hist["train_accuracy"][-1], time.perf_counter() - t0)
    bar.close()
    if best is not None:
        net.load_state_dict(best)
        hist["kept_epoch"] = int(np.argmax(hist["val_accuracy"])) + 1
    else:
        hist["kept_epoch"] = epochs
    net.eval()
    return hist


@torch.no_grad()
def logits_of(net: nn.Module, x: torch.Tensor, batch: int = 256) -> torch.Tensor:
    net.eval()
    return torch.cat([net(x[i : i + batch]) for i in range(0, len(x), batch)]) if len(x) else torch.zeros(0)


def accuracy(net: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    return float((logits_of(net, x).argmax(1) == y).float().mean()) if len(y) else float("nan")


# -- the int8 network ------------------------------------------------------------------------------
def tail_qatnet(full: qat.QATNet, boundary: str) -> qat.QATNet:
    """A QATNet of *full*'s ops after tensor *boundary* (renamed ``input``), sharing its settings."""
    ops = [op for op in full.ops]
    start = next(i for i, op in enumerate(ops) if op.get("y") == boundary) + 1
    tail_ops = copy.deepcopy(ops[start:])
    for op in tail_ops:
        for key in ("x", "a", "b"):
            if op.get(key) == boundary:
                op[key] = "input"
    tensors = named_tensors(full)
    net = qat.QATNet(tail_ops, tensors, full.config)
    copy_scales(full, net, {boundary: "input"})
    net.quantize = True
    return net


def named_tensors(net: qat.QATNet) -> Dict[str, torch.Tensor]:
    """The raw tensors a QATNet was built from (conv weights and BatchNorm states, fc), by IR name."""
    sd = net.state_dict()
    out = {}
    for op in net.ops:
        if op["op"] == "conv":
            out[op["name"] + ".weight"] = sd["params." + qat.param_key(op["name"] + ".weight")]
            for k in ("weight", "bias", "running_mean", "running_var"):
                out["{}.bn.{}".format(op["name"], k)] = sd["bns.{}.{}".format(qat.param_key(op["name"]), k)]
        elif op["op"] == "fc":
            for k in ("weight", "bias"):
                out["{}.{}".format(op["name"], k)] = sd["params." + qat.param_key("{}.{}".format(op["name"], k))]
    return out


@torch.no_grad()
def copy_scales(src: qat.QATNet, dst: qat.QATNet, renamed: Dict[str, str]) -> None:
    """Weight and activation scales of *src*'s layers and tensors into *dst* (tensor names mapped by *renamed*)."""
    for layer in dst.layers:
        dst.wscale(layer).copy_(src.wscale(layer))
    back = {v: k for k, v in renamed.items()}
    for t in dst.act_tensors:
        dst.ascale(t).copy_(src.ascale(back.get(t, t)))


@torch.no_grad()
def copy_weights(src: qat.QATNet, dst: qat.QATNet) -> None:
    """The parameters and BatchNorm states of *src*'s layers into the same layers of *dst*."""
    dsd = dst.state_dict()
    for k, v in src.state_dict().items():
        if k.startswith(("params.", "bns.")) and k in dsd:
            dsd[k].copy_(v)


class TransferRun:
    """A transfer run directory: a pretrained backbone, its trunk cache and its trained tail."""

    def __init__(self, path: str, cfg, progress: bool = True, cache_dir: Optional[str] = None):
        self.path, self.cfg, self.progress = path, cfg, progress
        self.cache_dir = cache_dir or os.path.join(path, "cache")
        self.arch = cfg.arch
        self.size = int(cfg.image_size or E.VARIANTS[cfg.arch][2])
        if not 32 <= self.size <= 1024:
            raise UsageError("--image-size {} is out of range for {} (32 to 1024)".format(self.size, cfg.arch))
        self.spec = input_spec(self.size)
        train, self.test, self.classes = list_data(cfg.data, cfg.limit_train, cfg.limit_test, cfg.seed)
        self.all_train = train
        self.flip = cfg.augment == "flip"
        if cfg.val_fraction:
            from ..data.folders import stratified_split

            if not 0 < cfg.val_fraction < 1:
                raise UsageError("--val-fraction must be between 0 and 1, got {}".format(cfg.val_fraction))
            keep, val = stratified_split(train.labels, cfg.val_fraction, cfg.seed + 1)
            self.train_idx, self.val_idx = np.sort(keep), np.sort(val)
        else:
            self.train_idx, self.val_idx = np.arange(len(train.paths)), np.zeros(0, dtype=np.int64)
        self.timing: Dict[str, float] = {}
        self.split: Optional[str] = None  # set by open(): the last part of the frozen trunk

    @classmethod
    def load(cls, path: str, progress: bool = True) -> "TransferRun":
        """A finished (or started) run, as its config.json says; nothing is written."""
        from .run_data import TrainConfig

        run = cls(path, TrainConfig.load(os.path.join(path, "config.json")), progress)
        run.split = resolve_split(run.arch, run.cfg.freeze, E.build(run.arch, 3, len(run.classes)))
        return run

    @classmethod
    def open(cls, path: str, cfg, progress: bool = True, cache_dir: Optional[str] = None) -> "TransferRun":
        from . import fit as training

        training.set_threads()
        torch.manual_seed(cfg.seed)
        run = cls(path, cfg, progress, cache_dir)
        model = run.new_model()  # the weights load (or fail) before the run folder takes the settings
        run.split = resolve_split(cfg.arch, cfg.freeze, model)
        os.makedirs(path, exist_ok=True)
        cfg.save(os.path.join(path, "config.json"))
        write_json_atomic(os.path.join(path, "data.json"), run.record())
        return run

    # -- pieces -------------------------------------------------------------------------------------
    def file(self, *parts) -> str:
        return os.path.join(self.path, *parts)

    def new_model(self) -> E.EfficientNetLite:
        m = E.build(self.arch, 3, len(self.classes))
        if self.cfg.pretrained:
            from .pretrained import load_pretrained

            report = load_pretrained(m, self.cfg.pretrained, self.arch, self.cfg.pretrained_partial)
            log.info("pretrained weights (%s): %s", self.cfg.pretrained, report.line())
        return m

    def record(self) -> dict:
        return dict(
            self.spec,
            classes=self.classes,
            split_after=getattr(self, "split", None),
            images={"train": len(self.train_idx), "validation": len(self.val_idx), "test": len(self.test.paths)},
            augmentation={"flip": self.flip, "cached": True},
        )

    def cache(self, model: E.EfficientNetLite) -> TrunkCache:
        assert self.split is not None
        return TrunkCache(self.cache_dir, model, self.split, self.spec, self.cfg.batch, self.progress)

    def features(self, cache: TrunkCache):
        """(train views, validation, test) trunk outputs; the train views are (image[, mirror])."""
        tr = cache.get(self.all_train, "train")
        views = [tr[self.train_idx]]
        if self.flip:
            views.append(cache.get(self.all_train, "train", flip=True)[self.train_idx])
        te = cache.get(self.test, "test")
        return views, tr[self.val_idx], te

    def labels(self):
        y = torch.from_numpy(self.all_train.labels)
        return y[self.train_idx], y[self.val_idx], torch.from_numpy(self.test.labels)

    # -- stages -------------------------------------------------------------------------------------
    def tail(self) -> E.EfficientNetLite:
        """The float network with its trained tail (``tail.pt``; trained once)."""
        path = self.file("tail.pt")
        if os.path.isfile(path):
            return float_model(load_checkpoint(path))
        if self.split is None:
            raise UsageError("--freeze none trains the whole network: that needs a GPU here; choose a split")
        t0 = time.perf_counter()
        model = self.new_model()
        cache = self.cache(model)
        views, xval, xte = self.features(cache)
        ytr, yval, yte = self.labels()
        freeze_trunk(model, self.split)
        model.eval()  # the trunk's BatchNorm stays in eval form; Tail.train() affects only the tail's parts
        tail = Tail(model, self.split)
        for m in model.tail_modules(self.split):
            m.train()
        hist = train_tail(
            _TailTrainMode(tail, model.tail_modules(self.split)),
            views,
            ytr,
            (xval, yval) if len(yval) else None,
            self.cfg.epochs,
            self.cfg.tail_lr,
            self.cfg.batch,
            self.cfg.seed,
            "tail ({} after {})".format(self.arch, self.split),
            self.progress,
        )
        metrics = {
            "fp32": {
                "validation": accuracy(tail, xval, yval) if len(yval) else None,
                "test": accuracy(tail, xte, yte),
            },
            "history": hist,
            "cache_seconds": cache.seconds,
        }
        save_checkpoint(float_state(model), path)
        self.timing["tail"] = time.perf_counter() - t0
        self._metrics(metrics)
        return model

    def int8(self) -> qat.QATNet:
        """The whole network int8 (``int8.pt``): scales from the weights and calibration on training
        images; then ``qat_epochs`` of QAT of the tail on cached trunk outputs."""
        path = self.file("int8.pt")
        if os.path.isfile(path):
            return qat.QATNet.from_state(load_checkpoint(path))
        model = self.tail()
        t0 = time.perf_counter()
        ops, tensors = model.to_ir()
        net = qat.QATNet(ops, tensors, model.config)
        net.init_weight_scales(head_headroom=1.0)
        g = torch.Generator().manual_seed(self.cfg.seed)
        pick = self.train_idx[torch.randperm(len(self.train_idx), generator=g)[:CALIB_IMAGES].numpy()]
        calib = self.all_train.subset(np.sort(pick))
        b = self.cfg.batch
        net.calibrate(read_batch(calib.paths[i : i + b], self.spec) for i in range(0, len(calib.paths), b))
        net.quantize = True
        if self.cfg.qat_epochs and self.split is not None:
            _, _, boundary = E.split_ops(ops, self.split)
            tnet = tail_qatnet(net, boundary)
            views, xval, _ = self.features(self.cache(self.new_model()))
            ytr, yval, _ = self.labels()
            hist = train_tail(
                tnet, views, ytr, (xval, yval) if len(yval) else None, self.cfg.qat_epochs,
                self.cfg.tail_lr / 10, self.cfg.batch, self.cfg.seed, "QAT tail", self.progress, weight_decay=0.0,
            )  # fmt: skip
            copy_weights(tnet, net)
            self._metrics({"qat": hist})
        net.eval()
        save_checkpoint(net.state(), path)
        self.timing["int8"] = time.perf_counter() - t0
        return net

    def _metrics(self, update: dict) -> None:
        path = self.file("metrics.json")
        m = {}
        if os.path.isfile(path):
            with open(path) as f:
                m = json.load(f)
        m.update(update)
        m.setdefault("timing", {}).update(self.timing)
        write_json_atomic(path, m)

    def train_all(self) -> None:
        self.int8()

    def hierarchy(self):
        from ..hierarchy import spec as hierarchy

        h = os.path.join(self.cfg.data, "hierarchy.json") if not self.cfg.hierarchy else self.cfg.hierarchy
        if self.cfg.hierarchy not in (None, "single") and os.path.isfile(h):
            return hierarchy.load(h)
        return hierarchy.Hierarchy(["all"], [list(self.classes)])

    def samples(self, budget: int = 2_000_000) -> np.ndarray:
        """The bundle's sample inputs (doctor's and --verify-switch's check): up to 8 test images,
        as many as fit in *budget* bytes of float32 (3 at 224 px)."""
        n = max(1, min(8, budget // (4 * int(np.prod(self.spec["shape"])))))
        return read_batch(self.test.paths[:n], self.spec).numpy()

    def export(self, out_dir: str, codec: str = "zstd", force: bool = False, release: Optional[int] = None) -> dict:
        """The int8 network as a flat bundle, its manifest recording the backbone and the split."""
        from edgetool.export.atomic import check_out
        from edgetool.export.bundle import write_bundle

        check_out(out_dir, force)
        net = self.int8()
        hier = self.hierarchy()
        spec = dict(self.spec)
        backbone = {"arch": self.arch, "pretrained": self.cfg.pretrained or "none", "split_after": self.split}
        subs = [net] * hier.n_super
        return write_bundle(
            out_dir, net, subs, hier, spec, codec, self.samples(), None, force,
            flat_classes=list(self.classes), release=release, backbone=backbone,
        )  # fmt: skip


class _TailTrainMode(nn.Module):
    """*tail* whose ``train()`` puts only *parts* (the tail's layers) into training mode."""

    def __init__(self, tail: Tail, parts: List[nn.Module]):
        super().__init__()
        self.tail, self.parts = tail, parts

    def train(self, mode: bool = True):
        for p in self.parts:
            p.train(mode)
        return self

    def forward(self, x):
        return self.tail(x)


def float_model(state: dict) -> E.EfficientNetLite:
    m = E.from_config(state["config"])
    m.load_state_dict(state["state_dict"])
    m.eval()
    return m


def is_transfer(cfg) -> bool:
    from .models import is_edge_backbone

    return is_edge_backbone(cfg.arch)
