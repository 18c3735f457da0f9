"""Image loading and normalisation as the bundle's input spec says (no torch)."""
from __future__ import annotations

import os
from typing import List, Sequence

import numpy as np

from .errors import MissingDependencyError, UsageError


def normalize(images_hwc_uint8: np.ndarray, spec: dict) -> np.ndarray:
    """uint8 (N, H, W, C) -> float32 (N, C, H, W), scaled and normalised."""
    x = images_hwc_uint8.transpose(0, 3, 1, 2).astype(np.float32) * np.float32(spec.get("scale", 1.0 / 255.0))
    c = x.shape[1]
    m = np.asarray(spec["mean"], dtype=np.float32).reshape(1, c, 1, 1)
    s = np.asarray(spec["std"], dtype=np.float32).reshape(1, c, 1, 1)
    return np.ascontiguousarray((x - m) / s, dtype=np.float32)


def to_input_array(image: np.ndarray, spec: dict) -> np.ndarray:
    """Resize and colour-convert one uint8 HxW or HxWxC array (RGB order) to the input size."""
    c, h, w = spec["shape"]
    if image.ndim == 2:
        image = image[..., None]
    if image.shape[2] == 4:
        image = image[..., :3]
    if c == 1 and image.shape[2] == 3:
        image = (image.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32))[..., None]
        image = np.clip(np.rint(image), 0, 255).astype(np.uint8)
    elif c == 3 and image.shape[2] == 1:
        image = np.repeat(image, 3, axis=2)
    if image.shape[:2] != (h, w):
        image = resize(image, h, w)
    return image


def resize(image: np.ndarray, h: int, w: int) -> np.ndarray:
    try:
        from PIL import Image
    except ImportError:
        raise MissingDependencyError("PIL", "cpu") from None
    mode = "L" if image.shape[2] == 1 else "RGB"
    im = Image.fromarray(image[..., 0] if mode == "L" else image, mode)
    out = np.asarray(im.resize((w, h), getattr(Image, "Resampling", Image).BILINEAR), dtype=np.uint8)
    return out[..., None] if out.ndim == 2 else out


def load_image(path: str) -> np.ndarray:
    """A uint8 HxWxC RGB (or HxWx1) array from an image file or a .npy array."""
    if not os.path.isfile(path):
        raise UsageError("{}: no such image".format(path))
    if path.endswith(".npy"):
        try:
            a = np.load(path, allow_pickle=False)
        except ValueError as exc:
            raise UsageError("{}: not a numpy array file ({})".format(path, exc)) from None
        if a.dtype != np.uint8 or a.ndim not in (2, 3):
            raise UsageError("{}: expected a uint8 HxW or HxWxC array".format(path))
        return a
    try:
        from PIL import Image
    except ImportError:
        raise MissingDependencyError("PIL", "cpu") from None
    try:
        with Image.open(path) as opened:
            gray = opened.mode in ("L", "I;16", "I", "1")
            return np.asarray(opened.convert("L" if gray else "RGB"), dtype=np.uint8)
    except (OSError, ValueError) as exc:
        raise UsageError("{}: cannot read image ({})".format(path, exc)) from None


def load_images(paths: Sequence[str], spec: dict) -> np.ndarray:
    arrays: List[np.ndarray] = [to_input_array(load_image(p), spec) for p in paths]
    return normalize(np.stack(arrays), spec)
