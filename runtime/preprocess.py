"""Image loading and normalisation as the bundle's input spec says (no torch)."""

from __future__ import annotations

import os
import struct
import tokenize
import warnings
from typing import List, Optional, Sequence

import numpy as np

from .errors import EdgetoolError, MissingDependencyError, UsageError


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
    if image.ndim != 3 or image.shape[2] not in (1, 3, 4) or image.size == 0:
        raise UsageError("expected a non-empty HxW or HxWxC (C = 1, 3, 4) image, got shape {}".format(image.shape))
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


MAX_PIXELS = 64_000_000  # an 8K frame is 33 Mpx; more than this is refused as a decompression bomb


def _check_pixels(path: str, h: int, w: int) -> None:
    if h < 1 or w < 1:
        raise UsageError("{}: empty image ({}x{} pixels)".format(path, w, h))
    if h * w > MAX_PIXELS:
        raise UsageError(
            "{}: {}x{} pixels, more than the {} allowed (refused as a decompression bomb)".format(
                path, w, h, MAX_PIXELS
            )
        )


def load_image(path: str) -> np.ndarray:
    """A uint8 HxWxC RGB (or HxWx1) array from an image file or a .npy array."""
    if not os.path.isfile(path):
        raise UsageError("{}: no such image".format(path))
    if path.lower().endswith(".npy"):
        return load_npy(path)
    try:
        from PIL import Image
    except ImportError:
        raise MissingDependencyError("PIL", "cpu") from None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # PIL's DecompressionBombWarning: the size check below decides
            with Image.open(path) as im:
                _check_pixels(path, im.size[1], im.size[0])
                return _pil_to_uint8(path, im)
    except Image.DecompressionBombError as exc:
        raise UsageError("{}: refused as a decompression bomb ({})".format(path, exc)) from None
    except (OSError, ValueError, SyntaxError, EOFError, struct.error, IndexError, TypeError) as exc:
        raise UsageError("{}: cannot read image ({})".format(path, str(exc)[:160])) from None


def _pil_to_uint8(path: str, im) -> np.ndarray:
    if im.mode.startswith("I;16") or im.mode == "I":
        # 16-bit grey: scale to 8 bits (65535 -> 255), never clip to two levels.
        a = np.asarray(im).astype(np.int64)
        return ((np.clip(a, 0, 65535) * 255 + 32767) // 65535).astype(np.uint8)
    if im.mode == "F":
        raise UsageError("{}: 32-bit float images are not supported; save it as 8- or 16-bit".format(path))
    im = im.convert("L") if im.mode in ("L", "1") else im.convert("RGB")
    return np.asarray(im, dtype=np.uint8)


# numpy parses the .npy header with Python's tokenizer: a malformed one raises these, not only ValueError
NPY_ERRORS = (ValueError, EOFError, OSError, SyntaxError, TypeError, tokenize.TokenError)


def npy_header(f):
    """(shape, fortran_order, dtype) from a .npy header, before any data is read or allocated."""
    fmt = np.lib.format
    version = fmt.read_magic(f)
    if version not in ((1, 0), (2, 0)):
        raise ValueError("unsupported .npy version {}".format(version))
    read = fmt.read_array_header_1_0 if version == (1, 0) else fmt.read_array_header_2_0
    return read(f)


def load_npy(path: str) -> np.ndarray:
    """A uint8 HxW or HxWxC (C = 1, 3, 4) array from a .npy file; checked from its header before reading."""
    try:
        with open(path, "rb") as f:
            shape, fortran, dtype = npy_header(f)
            _check_npy(path, shape, dtype)
            count = int(np.prod(shape))
            buf = bytearray(count)  # readinto, not np.fromfile: a signal's exception passes through it unchanged
            got = f.readinto(buf)
            if got != count or f.read(1):
                raise ValueError("the file holds {} bytes of data for a {} array".format(got, shape))
            a = np.frombuffer(buf, dtype=np.uint8)
    except NPY_ERRORS as exc:
        raise UsageError("{}: not a numpy array file ({})".format(path, str(exc)[:160])) from None
    return a.reshape(shape, order="F" if fortran else "C")


def _check_npy(path: str, shape, dtype) -> None:
    if dtype != np.uint8 or len(shape) not in (2, 3):
        raise UsageError(
            "{}: holds a {} array of shape {}; expected a uint8 HxW or HxWxC array".format(path, dtype, tuple(shape))
        )
    if len(shape) == 3 and shape[2] not in (1, 3, 4):
        raise UsageError("{}: {} channels; images have 1, 3 or 4".format(path, shape[2]))
    _check_pixels(path, shape[0], shape[1])


def load_images(paths: Sequence[str], spec: dict, skipped: Optional[list] = None) -> Optional[np.ndarray]:
    """The input batch of *paths*.  The first unreadable image raises, unless *skipped* is given:
    then it is left out and (path, error) appended there (None when no image could be read)."""
    arrays: List[np.ndarray] = []
    for p in paths:
        try:
            arrays.append(to_input_array(load_image(p), spec))
        except EdgetoolError as exc:
            if skipped is None:
                raise
            skipped.append((p, str(exc)))
    return normalize(np.stack(arrays), spec) if arrays else None


IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".bmp", ".pgm", ".ppm", ".webp", ".tif", ".tiff", ".npy")


def folder_images(folder: str, exts: Sequence[str] = IMAGE_EXTS) -> List[str]:
    """The image files under *folder* (sub-folders included), sorted by their path inside it, so the
    order never depends on the filesystem; ``classify`` and ``camera`` read a folder in this order.
    A sub-folder that is a symbolic link is read as any other (a class folder linked in from
    elsewhere); a link back to a folder above it (a loop) is one error line."""
    found: List[str] = []
    above = {folder: {os.path.realpath(folder)}}  # per folder: the real paths of the folders it is in
    for root, dirs, files in os.walk(folder, followlinks=True):
        dirs.sort()
        for d in dirs:
            sub = os.path.join(root, d)
            real = os.path.realpath(sub)
            if real in above[root]:
                raise UsageError("{}: a symbolic link to a folder it is in (a loop)".format(sub))
            above[sub] = above[root] | {real}
        rel = os.path.relpath(root, folder)
        found.extend(os.path.normpath(os.path.join(rel, f)) for f in files if f.lower().endswith(tuple(exts)))
    return [os.path.join(folder, f) for f in sorted(found, key=lambda f: f.split(os.sep))]


def expand_images(paths: Sequence[str]) -> List[str]:
    """Image files of *paths*, in the order given; a folder's in :func:`folder_images`' order."""
    out: List[str] = []
    for p in paths:
        if os.path.isdir(p):
            out.extend(folder_images(p))
        elif os.path.isfile(p):
            out.append(p)
        else:
            raise UsageError("{}: no such image or folder".format(p))
    if not out:
        raise UsageError("no images given")
    return out
