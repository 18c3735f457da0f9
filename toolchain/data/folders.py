"""Datasets: IDX (MNIST format) files, ImageFolder trees (torchvision), and the shipped Fashion-MNIST sample.

Every loader returns an :class:`ArrayDataset`: uint8 images (N, H, W, C), int64 fine
labels, and the class names.  Training code turns it into normalised float tensors.
"""

from __future__ import annotations

import gzip
import json
import os
import struct
from dataclasses import dataclass
from typing import List, Optional, Sequence

import numpy as np

from edgetool.runtime.errors import UsageError

SAMPLE_DIR = os.path.join(os.path.dirname(__file__), "sample")


@dataclass
class ArrayDataset:
    images: np.ndarray  # uint8 (N, H, W, C)
    labels: np.ndarray  # int64 (N,)
    classes: List[str]
    name: str = ""
    mean: Optional[List[float]] = None
    std: Optional[List[float]] = None
    channels_from: str = ""  # how the channel count was chosen (ImageFolder data: detected or --channels)

    def __len__(self):
        return len(self.labels)

    def subset(self, idx) -> "ArrayDataset":
        return ArrayDataset(
            self.images[idx], self.labels[idx], self.classes, self.name, self.mean, self.std, self.channels_from
        )

    @property
    def channels(self) -> int:
        return int(self.images.shape[3])

    @property
    def size(self) -> int:
        return int(self.images.shape[1])

    def stats(self):
        """Per-channel mean/std in [0, 1] units (cached; computed on this split)."""
        if self.mean is None:
            x = self.images.reshape(-1, self.channels).astype(np.float64) / 255.0
            self.mean = [float(v) for v in x.mean(0)]
            self.std = [float(v) for v in x.std(0)]
        return self.mean, self.std


def _open(path):
    return gzip.open(path, "rb") if path.endswith(".gz") else open(path, "rb")


def read_idx(path: str) -> np.ndarray:
    """Read an IDX file (optionally gzipped): magic 0x0000 08 <ndim>, big-endian dims, uint8 data."""
    if not os.path.isfile(path):
        raise UsageError("{}: no such IDX file".format(path))
    with _open(path) as f:
        head = f.read(4)
        if len(head) != 4 or head[0] != 0 or head[1] != 0 or head[2] != 0x08:
            raise UsageError("{}: not a uint8 IDX file (bad magic)".format(path))
        ndim = head[3]
        dims = struct.unpack(">" + "I" * ndim, f.read(4 * ndim))
        data = np.frombuffer(f.read(), dtype=np.uint8)
    n = int(np.prod(dims))
    if data.size != n:
        raise UsageError("{}: truncated IDX file ({} of {} values)".format(path, data.size, n))
    return data.reshape(dims)


def write_idx(path: str, array: np.ndarray) -> None:
    array = np.ascontiguousarray(array, dtype=np.uint8)
    payload = bytes([0, 0, 0x08, array.ndim]) + struct.pack(">" + "I" * array.ndim, *array.shape) + array.tobytes()
    if path.endswith(".gz"):
        payload = gzip.compress(payload, compresslevel=9, mtime=0)
    with open(path, "wb") as f:
        f.write(payload)


def load_idx(images_path: str, labels_path: str, classes: Sequence[str], name="") -> ArrayDataset:
    images = read_idx(images_path)
    labels = read_idx(labels_path).astype(np.int64)
    if images.ndim == 3:
        images = images[..., None]
    if len(images) != len(labels):
        raise UsageError("{}: {} images but {} labels in {}".format(images_path, len(images), len(labels), labels_path))
    return ArrayDataset(images, labels, list(classes), name)


def load_idx_dir(root: str, split: str, classes: Sequence[str], name="") -> ArrayDataset:
    """A folder in the (Fashion-)MNIST layout: train-images-idx3-ubyte(.gz), t10k-..."""
    prefix = "train" if split == "train" else "t10k"
    for suffix in (".gz", ""):
        img = os.path.join(root, "{}-images-idx3-ubyte{}".format(prefix, suffix))
        lab = os.path.join(root, "{}-labels-idx1-ubyte{}".format(prefix, suffix))
        if os.path.isfile(img) and os.path.isfile(lab):
            return load_idx(img, lab, classes, name)
    raise UsageError("{}: no {}-images-idx3-ubyte[.gz] / {}-labels-idx1-ubyte[.gz] pair".format(root, prefix, prefix))


IMG_EXT = (".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".pgm", ".tif", ".tiff", ".webp")


def load_image_folder(
    root: str,
    size: int,
    channels: int = 3,
    classes: Optional[Sequence[str]] = None,
    name="",
    limit_per_class: Optional[int] = None,
    resize: str = "squash",
) -> ArrayDataset:
    """An ImageFolder tree ``root/<class>/<image>`` (torchvision's ImageFolder), brought to size x size
    as *resize* says: "squash", the whole image resized to the square (a photo's aspect ratio is not
    kept); "shorter", its shorter side resized to size, then the centre square.

    *channels*: 1 (grayscale), 3 (RGB), or 0 to detect it from the images (:func:`detect_channels`).
    Images are read and converted exactly as the device reads them (``edgetool.runtime.preprocess``).
    *classes* fixes which class folders are read and their label order (default: every folder,
    sorted); *limit_per_class* keeps the first images of each class.
    """
    from edgetool.runtime.preprocess import load_image, to_input_array

    samples, chosen = folder_samples(root, classes)
    taken = [0] * len(chosen)
    kept = []
    for path, label in samples:
        if limit_per_class and taken[label] >= limit_per_class:
            continue
        taken[label] += 1
        kept.append((path, label))
    if not kept:
        raise UsageError("{}: no images found".format(root))
    note = "--channels {}".format(channels)
    if channels == 0:
        channels, note = detect_channels([p for p, _ in kept])
    if channels not in (1, 3):
        raise UsageError("channels must be 1 (grayscale), 3 (RGB) or 0 (detect), got {}".format(channels))
    spec = {"shape": [channels, size, size], "resize": resize}
    images = read_all([p for p, _ in kept], lambda p: to_input_array(load_image(p), spec))
    labels = np.asarray([lab for _, lab in kept], dtype=np.int64)
    return ArrayDataset(np.stack(images), labels, chosen, name, channels_from=note)


def read_all(paths: Sequence[str], read) -> list:
    """``[read(p) for p in paths]``, in order, on up to 8 threads (image decoding releases the GIL)."""
    from concurrent.futures import ThreadPoolExecutor

    workers = max(1, min(8, os.cpu_count() or 1, len(paths) // 256))
    if workers == 1:
        return [read(p) for p in paths]
    with ThreadPoolExecutor(workers) as pool:
        return list(pool.map(read, paths))


def folder_samples(root: str, classes: Optional[Sequence[str]]):
    """(path, label) of every image of an ImageFolder tree, in label order and file order within a class."""
    import inspect

    from torchvision.datasets import ImageFolder

    if not os.path.isdir(root):
        raise UsageError("{}: no such image folder".format(root))
    found = sorted(d for d in os.listdir(root) if os.path.isdir(os.path.join(root, d)))
    chosen = list(classes) if classes else found
    missing = [c for c in chosen if c not in found]
    if missing:
        raise UsageError("{}: class folders missing: {}".format(root, ", ".join(missing)))

    class Folder(ImageFolder):
        def find_classes(self, directory):
            return chosen, {c: i for i, c in enumerate(chosen)}

    empty_ok = {"allow_empty": True} if "allow_empty" in inspect.signature(ImageFolder.__init__).parameters else {}
    try:
        folder = Folder(root, loader=lambda p: p, is_valid_file=lambda p: p.lower().endswith(IMG_EXT), **empty_ok)
    except FileNotFoundError:
        raise UsageError("{}: no images found".format(root)) from None
    return sorted(folder.samples, key=lambda s: s[1]), chosen


def _gray_mode(mode: str) -> bool:
    return mode in ("1", "L", "LA", "I", "F") or mode.startswith("I;16")


def detect_channels(paths: Sequence[str]):
    """(1 or 3, why): 1 when every image is stored grayscale, or is RGB with R = G = B everywhere.

    The file headers decide first; only when some image is stored in colour are the pixels
    looked at, and the first image with colour in it ends the search.
    """
    from PIL import Image

    from edgetool.runtime.preprocess import load_image

    def mode_of(p):
        try:
            with Image.open(p) as im:
                return im.mode
        except (OSError, ValueError, SyntaxError) as exc:
            raise UsageError("{}: cannot read image ({})".format(p, str(exc)[:160])) from None

    modes = set(read_all(paths, mode_of))
    if all(_gray_mode(m) for m in modes):
        return 1, "detected: all {} training images are stored grayscale (mode {})".format(
            len(paths), ", ".join(sorted(modes))
        )
    for p in paths:
        a = load_image(p)
        if a.ndim == 3 and a.shape[2] >= 3 and (np.any(a[..., 0] != a[..., 1]) or np.any(a[..., 0] != a[..., 2])):
            return 3, "detected: {} is in colour".format(os.path.basename(p))
    return 1, "detected: all {} training images have R = G = B (stored as {})".format(
        len(paths), ", ".join(sorted(modes))
    )


def sample_hierarchy_path() -> str:
    return os.path.join(SAMPLE_DIR, "hierarchy.json")


def load_sample(split: str) -> ArrayDataset:
    """The shipped Fashion-MNIST sample (see toolchain/data/sample/README.md)."""
    with open(sample_hierarchy_path()) as f:
        h = json.load(f)
    classes = [h["label_index"][str(i)] for i in range(len(h["label_index"]))]
    return load_idx_dir(SAMPLE_DIR, split, classes, name="fashion-mnist-sample")


def stratified_split(labels: np.ndarray, fraction: float, seed: int = 0):
    """Indices (a, b) with ~fraction of every class in b."""
    rng = np.random.default_rng(seed)
    a: List[np.intp] = []
    b: List[np.intp] = []
    for c in np.unique(labels):
        idx = np.nonzero(labels == c)[0]
        rng.shuffle(idx)
        n = int(round(len(idx) * fraction))
        b.extend(idx[:n])
        a.extend(idx[n:])
    return np.sort(np.asarray(a)), np.sort(np.asarray(b))
