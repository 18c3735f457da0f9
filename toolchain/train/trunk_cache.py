"""The frozen trunk of a pretrained backbone, computed once: the photos of a transfer run
(:mod:`.transfer`), read as the device reads them, and the trunk's outputs cached in float16
files keyed by the trunk's weights, the split, what the preprocessing makes of probe images,
the mirroring and the image files."""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import time
from dataclasses import dataclass
from typing import Dict, List, Sequence

import numpy as np
import torch

from edgetool.runtime.errors import UsageError
from edgetool.runtime.files import atomic_path

from . import efficientnet as E

log = logging.getLogger(__name__)


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
    from edgetool.runtime import preprocess as P

    code = P.load_image.__code__  # the decoder as loaded (its source file may change under a running process)
    h = hashlib.sha256(code.co_code + repr(code.co_consts).encode())
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
        self.seconds_of: Dict[str, float] = {}  # the same, per image set ("train", "test")

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
        before = self.seconds
        out = self._compute(images, "trunk pass: {}{}".format(name, " (mirrored)" if flip else ""), flip)
        self.seconds_of[name] = self.seconds_of.get(name, 0.0) + self.seconds - before
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
