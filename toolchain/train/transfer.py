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
import json
import logging
import os
import time
from typing import Dict, Optional

import numpy as np
import torch

from edgetool.runtime.errors import UsageError
from edgetool.runtime.files import write_json_atomic

from . import efficientnet as E
from . import qat
from .checkpoints import float_state, load_checkpoint, save_checkpoint
from .models import is_transfer  # noqa: F401  (the CLI asks here)
from .tail import Tail, accuracy, copy_weights, freeze_trunk, tail_qatnet, train_tail
from .trunk_cache import TrunkCache, list_data, read_batch

log = logging.getLogger(__name__)

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
        from .device import set_threads

        set_threads()
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
        model.eval()  # the trunk's BatchNorm keeps its eval form; Tail.train() reaches only the tail
        tail = Tail(model, self.split)
        hist = train_tail(
            tail,
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
            "test_pass_seconds": cache.seconds_of.get("test", 0.0),  # evaluation, not training
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
        if self.cfg.update_of:  # the deployed run's int8 network, its tail trained on (:mod:`.update`)
            from .update import update_tail

            return update_tail(self)
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
        hist: Optional[dict] = None
        if self.cfg.qat_epochs and self.split is not None:
            _, _, boundary = E.split_ops(ops, self.split)
            tnet = tail_qatnet(net, boundary)
            views, xval, _ = self.features(self.cache(model))  # the trunk is frozen: the same cache
            ytr, yval, _ = self.labels()
            hist = train_tail(
                tnet, views, ytr, (xval, yval) if len(yval) else None, self.cfg.qat_epochs,
                self.cfg.tail_lr / 10, self.cfg.batch, self.cfg.seed, "QAT tail", self.progress, weight_decay=0.0,
            )  # fmt: skip
            copy_weights(tnet, net)
        net.eval()
        save_checkpoint(net.state(), path)
        self.timing["int8"] = time.perf_counter() - t0
        self._metrics({"qat": hist})  # with the stage's time
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
        from .specialist_run import train_run

        self.int8()
        train_run(self)

    def hierarchy(self):
        from ..hierarchy import spec as hierarchy

        if self.cfg.hierarchy not in (None, "single"):
            return hierarchy.load(self.cfg.hierarchy)
        h = os.path.join(self.cfg.data, "hierarchy.json")
        if self.cfg.hierarchy is None and os.path.isfile(h):
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
        from .specialist_run import bundle_nets

        hier, subs, names = bundle_nets(self, net)
        spec = dict(self.spec)
        backbone = {"arch": self.arch, "pretrained": self.cfg.pretrained or "none", "split_after": self.split}
        if self.split is not None:  # the tensor where the trunk ends: a specialist reruns only what follows
            backbone["trunk_output"] = E.split_ops(net.ops, self.split)[2]
        return write_bundle(
            out_dir, net, subs, hier, spec, codec, self.samples(), None, force,
            flat_classes=list(self.classes), release=release, backbone=backbone, specialists=names,
        )  # fmt: skip


def float_model(state: dict) -> E.EfficientNetLite:
    m = E.from_config(state["config"])
    m.load_state_dict(state["state_dict"])
    m.eval()
    return m
