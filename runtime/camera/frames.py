"""Input frames: orientation (``camera --input-flip``), as jetson-inference's video options name
it, and the channel order (OpenCV delivers BGR; the network's preprocessing takes RGB)."""

from __future__ import annotations

import numpy as np

FLIPS = ("none", "horizontal", "vertical", "rotate-180", "clockwise", "counterclockwise")


def flip_frame(frame: np.ndarray, how: str) -> np.ndarray:
    """*frame* mirrored or turned as *how* says (``none``: unchanged, no copy)."""
    if how == "none":
        return frame
    if how == "horizontal":
        return np.ascontiguousarray(frame[:, ::-1])
    if how == "vertical":
        return np.ascontiguousarray(frame[::-1])
    if how == "rotate-180":
        return np.ascontiguousarray(frame[::-1, ::-1])
    if how == "clockwise":
        return np.ascontiguousarray(np.rot90(frame, k=-1))
    if how == "counterclockwise":
        return np.ascontiguousarray(np.rot90(frame, k=1))
    raise ValueError("unknown flip {!r}; choose one of {}".format(how, ", ".join(FLIPS)))


def swap_rb(frame: np.ndarray) -> np.ndarray:
    """BGR(A) <-> RGB(A): the first and third channels swapped, nothing else touched (a lossless swap,
    its own inverse); a grey frame is returned as it is."""
    if frame.ndim == 3 and frame.shape[2] in (3, 4):
        order = [2, 1, 0] + ([3] if frame.shape[2] == 4 else [])
        return np.ascontiguousarray(frame[..., order])
    return frame
