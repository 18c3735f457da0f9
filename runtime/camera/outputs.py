"""Outputs of the camera loop: overlay, display window, video file, RTP stream (the JSON lines
are :mod:`.writers`').

Files are written to a hidden temporary sibling and renamed into place when the loop ends (on
its own, on a signal or on a lost source), complete and checked, so a reader never sees a
half-written file under the final name; a file that cannot be written is an OutputError, and a
loop that ends on an unexpected error publishes nothing.
"""

from __future__ import annotations

import os
from typing import Any, Optional

import numpy as np

from ..errors import OutputError, SourceError, UsageError
from ..files import cannot_write, check_output, fsync_dir
from .writers import check_out_dir, disk_full, no_space, remove_quietly, remove_stale_partials, temp_sibling
from .sources import require_cv2

VIDEO_FOURCC = {".mp4": "mp4v", ".m4v": "mp4v", ".mov": "mp4v", ".avi": "MJPG", ".mkv": "XVID"}
# --output-codec: jetson-inference's names -> OpenCV fourcc (what this OpenCV can encode varies)
CODECS = {
    "mjpeg": "MJPG",
    "mpeg4": "mp4v",
    "xvid": "XVID",
    "h264": "avc1",
    "h265": "hvc1",
    "vp8": "VP80",
    "vp9": "VP90",
}
MIN_CANVAS = 320  # small frames (e.g. 28x28) are scaled up so the overlay stays legible


def canvas(frame: np.ndarray) -> np.ndarray:
    """A BGR copy of *frame*, scaled up by an integer factor to at least MIN_CANVAS pixels wide."""
    cv2 = require_cv2()
    if frame.ndim == 2 or frame.shape[2] == 1:
        frame = cv2.cvtColor(frame, cv2.COLOR_GRAY2BGR)
    elif frame.shape[2] == 4:
        frame = cv2.cvtColor(frame, cv2.COLOR_BGRA2BGR)
    f = max(1, -(-MIN_CANVAS // frame.shape[1]))
    if f > 1:
        return cv2.resize(frame, (frame.shape[1] * f, frame.shape[0] * f), interpolation=cv2.INTER_NEAREST)
    return frame.copy()


def draw_overlay(img: np.ndarray, lines) -> np.ndarray:
    """Draw text *lines* on a dark band at the top of *img* (in place), jetson-inference style."""
    cv2 = require_cv2()
    scale = max(0.45, img.shape[1] / 900.0)
    step = int(24 * scale / 0.6)
    cv2.rectangle(img, (0, 0), (img.shape[1], step * len(lines) + 8), (0, 0, 0), -1)
    for n, text in enumerate(lines):
        cv2.putText(img, text, (8, step * (n + 1)), cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), 1, cv2.LINE_AA)
    return img


class Display:
    """An OpenCV window (``display://N``); q or Esc closes it and stops the loop."""

    def __init__(self, name: str = "edgetool"):
        cv2 = require_cv2()
        gui = [ln for ln in cv2.getBuildInformation().splitlines() if ln.strip().startswith("GUI:")]
        if gui and gui[0].split(":", 1)[1].strip().upper() == "NONE":
            raise UsageError(
                "this OpenCV has no GUI (opencv-python-headless); pass --headless, or install "
                "an OpenCV with GUI support (JetPack's python3-opencv)"
            )
        if not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
            raise UsageError("no display (DISPLAY is not set); pass --headless or write to a video file")
        self.cv2, self.name, self.closed = cv2, name, False

    def write(self, img: np.ndarray, frame_size=None) -> None:
        self.cv2.imshow(self.name, img)
        key = self.cv2.waitKey(1) & 0xFF
        if key in (ord("q"), 27):
            self.closed = True

    def close(self, complete: bool = True) -> None:
        try:
            self.cv2.destroyWindow(self.name)
        except self.cv2.error:
            pass


class VideoOut:
    """An output video file with the overlay: at the input frame's size (never scaled up unasked), or
    at *size*; *codec* (:data:`CODECS`) instead of the container's default, *bitrate* in bits/s.

    Written to a hidden ``.partial`` sibling and renamed into place only when complete and checked:
    OpenCV's writer reports no error, so a full disk is watched for after every frame and the file
    is opened again before the rename; a failure is an :class:`OutputError` and the partial file is
    removed."""

    def __init__(self, path: str, fps: float, size=None, codec: Optional[str] = None, bitrate: int = 0):
        ext = os.path.splitext(path)[1].lower()
        if ext not in VIDEO_FOURCC:
            raise UsageError(
                "{}: unsupported output; use display://0 or a video file ({})".format(
                    path, ", ".join(sorted(VIDEO_FOURCC))
                )
            )
        check_out_dir(path)
        check_output(path, "OUTPUT")
        self.path, self.tmp, self.fps, self.ext = path, temp_sibling(path), float(fps), ext
        self.fourcc = CODECS[codec] if codec else VIDEO_FOURCC[ext]
        self.params = _bitrate_params(bitrate)
        self.writer: Any = None
        self.size: Any = tuple(size) if size else None
        self.frames = 0
        self.failed = False
        self.removed_stale = remove_stale_partials(path)

    def write(self, img: np.ndarray, frame_size=None) -> None:
        cv2 = require_cv2()
        if self.failed:
            return
        if self.writer is None:
            self.size = self.size or tuple(frame_size or (img.shape[1], img.shape[0]))
            self.writer = self._open(cv2)
        if (img.shape[1], img.shape[0]) != self.size:
            img = cv2.resize(img, self.size, interpolation=cv2.INTER_AREA)
        self.writer.write(img)
        self.frames += 1
        if self.tmp and disk_full(os.path.dirname(self.tmp)):
            self._abort()
            raise no_space(self.path, self.frames)

    def _open(self, cv2):
        writer = cv2.VideoWriter(self.tmp, cv2.VideoWriter_fourcc(*self.fourcc), self.fps, self.size, self.params)
        if not writer.isOpened():
            remove_quietly(self.tmp)
            raise SourceError(
                "{}: OpenCV cannot write {} video here (fourcc {}); try another --output-codec or container".format(
                    self.path, self.ext, self.fourcc
                )
            )
        return writer

    def _abort(self) -> None:
        self.failed = True
        if self.writer is not None:
            self.writer.release()
            self.writer = None
        remove_quietly(self.tmp)

    def close(self, complete: bool = True) -> None:
        """Finish the file and rename it into place; *complete* False (the loop ended on an
        unexpected error): remove it instead."""
        if self.writer is None:
            return
        self.writer.release()
        self.writer = None
        if not complete:
            remove_quietly(self.tmp)
            return
        if disk_full(os.path.dirname(self.tmp)):
            remove_quietly(self.tmp)
            raise no_space(self.path, self.frames)
        held = self._frames_held()
        if held is not None:
            remove_quietly(self.tmp)
            raise OutputError(
                "{}: the video written holds {} of {} frames (a full disk or a failed write); nothing was "
                "written under this name".format(self.path, held, self.frames)
            )
        try:
            os.replace(self.tmp, str(self.path))
        except OSError as exc:
            remove_quietly(self.tmp)
            raise cannot_write(str(self.path), exc) from None
        fsync_dir(os.path.dirname(os.path.abspath(self.path)))

    def _frames_held(self) -> Optional[str]:
        """None when the written file opens and does not report fewer frames than were written
        (a small tolerance: some backends estimate the count); else what it holds, in words."""
        cv2 = require_cv2()
        cap = cv2.VideoCapture(self.tmp)
        try:
            if not cap.isOpened():
                return "none (it does not open)"
            count = cap.get(cv2.CAP_PROP_FRAME_COUNT)
        finally:
            cap.release()
        if count == count and 0 <= count < self.frames - max(2, self.frames // 100):
            return str(int(count))
        return None


def _bitrate_params(bitrate: int) -> list:
    """VideoWriter parameters for *bitrate* bits/s (none for 0)."""
    if not bitrate:
        return []
    cv2 = require_cv2()
    prop = getattr(cv2, "VIDEOWRITER_PROP_BITRATE", None)
    if prop is None:
        raise UsageError("--bitrate: this OpenCV ({}) cannot set a video bitrate".format(cv2.__version__))
    return [prop, int(bitrate)]


class RtpOut(VideoOut):
    """``rtp://HOST:PORT``: H.264 over RTP/UDP through an OpenCV GStreamer pipeline."""

    def __init__(self, uri: str, fps: float, size=None, bitrate: int = 0):
        from .sources import build_flag

        cv2 = require_cv2()
        if not build_flag(cv2, "GStreamer"):
            raise UsageError(
                "{}: rtp:// output needs OpenCV built with GStreamer (JetPack's python3-opencv); this OpenCV "
                "has none".format(uri)
            )
        host, _, port = uri[len("rtp://") :].rpartition(":")
        if not host or not port.isdigit():
            raise UsageError("{}: expected rtp://HOST:PORT".format(uri))
        kbps = max(1, int(bitrate) // 1000) if bitrate else 4000
        self.path, self.tmp, self.fps, self.ext, self.frames = uri, "", float(fps), "", 0  # no file to watch
        self.failed, self.removed_stale = False, []
        self.writer: Any = None
        self.size: Any = tuple(size) if size else None
        self.pipeline = (
            "appsrc ! videoconvert ! x264enc tune=zerolatency speed-preset=ultrafast bitrate={} ! "
            "rtph264pay config-interval=1 pt=96 ! udpsink host={} port={}".format(kbps, host, port)
        )

    def _open(self, cv2):
        writer = cv2.VideoWriter(self.pipeline, cv2.CAP_GSTREAMER, 0, self.fps, self.size, True)
        if not writer.isOpened():
            raise SourceError("{}: the GStreamer pipeline did not open: {}".format(self.path, self.pipeline))
        return writer

    def close(self, complete: bool = True) -> None:
        if self.writer is not None:
            self.writer.release()
            self.writer = None
