"""The one preprocessing of every image a network sees, as the bundle's input spec says (no torch).

``classify``, ``camera`` (its frames, and the files of an image folder), ``serve`` and the
toolchain's training and evaluation all go through it:

* :func:`load_image` decodes a file (PIL; a .npy array) to uint8 RGB or grey;
* :func:`to_input_array` turns one uint8 RGB (or grey) image into the network's H x W x C:
  alpha dropped, colour converted (RGB to grey with 0.299 / 0.587 / 0.114, grey to RGB by
  repetition), then resized as ``input.resize`` says (:data:`RESIZE_MODES`);
* :func:`normalize` scales a uint8 batch and subtracts the mean, divides by the std, NCHW float32;
* :func:`prepare` is both, for a list of images.
"""

from __future__ import annotations

import os
import struct
import tokenize
import warnings
from typing import List, Optional, Sequence, Tuple

import numpy as np

from .choices import RESIZE_MODES
from .errors import EdgetoolError, MissingDependencyError, UsageError

# input.resize (RESIZE_MODES): "squash" (the default): straight to H x W, bilinear; "shorter": the shorter
# side to round(min(H, W) / input.crop) keeping the aspect ratio, bilinear, then the centre H x W (the
# evaluation transform of ImageNet-pretrained backbones, e.g. 256 then 224 for crop 0.875).
GREY_WEIGHTS = (0.299, 0.587, 0.114)  # ITU-R 601 luma, as PIL's convert("L") and OpenCV's BGR2GRAY


def resize_mode(spec: dict) -> Tuple[str, float]:
    """(input.resize, input.crop) of *spec*, their defaults where absent."""
    return str(spec.get("resize", "squash")), float(spec.get("crop", 1.0))


def normalize(images_hwc_uint8: np.ndarray, spec: dict) -> np.ndarray:
    """uint8 (N, H, W, C) -> float32 (N, C, H, W), scaled and normalised."""
    x = images_hwc_uint8.transpose(0, 3, 1, 2).astype(np.float32) * np.float32(spec.get("scale", 1.0 / 255.0))
    c = x.shape[1]
    m = np.asarray(spec["mean"], dtype=np.float32).reshape(1, c, 1, 1)
    s = np.asarray(spec["std"], dtype=np.float32).reshape(1, c, 1, 1)
    return np.ascontiguousarray((x - m) / s, dtype=np.float32)


def prepare(images: Sequence[np.ndarray], spec: dict) -> np.ndarray:
    """The network's input batch of uint8 RGB (or grey) images: :func:`to_input_array` each, then :func:`normalize`."""
    return normalize(np.stack([to_input_array(im, spec) for im in images]), spec)


def to_input_array(image: np.ndarray, spec: dict) -> np.ndarray:
    """One uint8 HxW or HxWxC (C = 1, 3, 4) image in RGB(A) order -> uint8 H x W x C of the network's
    input: alpha dropped, colour converted to the input's channels, resized as ``input.resize`` says."""
    c, h, w = spec["shape"]
    if image.ndim == 2:
        image = image[..., None]
    if image.ndim != 3 or image.shape[2] not in (1, 3, 4) or image.size == 0:
        raise UsageError("expected a non-empty HxW or HxWxC (C = 1, 3, 4) image, got shape {}".format(image.shape))
    if image.shape[2] == 4:
        image = image[..., :3]
    if c == 1 and image.shape[2] == 3:
        image = (image.astype(np.float32) @ np.array(GREY_WEIGHTS, np.float32))[..., None]
        image = np.clip(np.rint(image), 0, 255).astype(np.uint8)
    elif c == 3 and image.shape[2] == 1:
        image = np.repeat(image, 3, axis=2)
    mode, crop = resize_mode(spec)
    if mode == "shorter":
        return shorter_side_crop(image, h, w, crop)
    if mode != "squash":
        raise UsageError("input.resize {!r} is not one of {}".format(mode, ", ".join(RESIZE_MODES)))
    return _resized(image, h, w)


def shorter_side_crop(image: np.ndarray, h: int, w: int, crop: float = 1.0) -> np.ndarray:
    """*image* with its shorter side resized to round(min(h, w) / crop) and the longer one in
    proportion (rounded), bilinearly, then its centre h x w (offsets rounded down)."""
    if not 0.0 < crop <= 1.0:
        raise UsageError("input.crop must be in (0, 1], got {}".format(crop))
    ih, iw = image.shape[:2]
    short = int(round(min(h, w) / crop))
    r = short / min(ih, iw)
    nh, nw = max(h, int(round(ih * r))), max(w, int(round(iw * r)))
    if (nh, nw) != (ih, iw):
        image = resize(image, nh, nw)
    top, left = (nh - h) // 2, (nw - w) // 2
    return np.ascontiguousarray(image[top : top + h, left : left + w])


def _resized(image: np.ndarray, h: int, w: int) -> np.ndarray:
    return image if image.shape[:2] == (h, w) else resize(image, h, w)


def resize(image: np.ndarray, h: int, w: int) -> np.ndarray:
    """*image* (uint8 HxWx1 or HxWx3) resized to h x w, PIL's bilinear filter."""
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
