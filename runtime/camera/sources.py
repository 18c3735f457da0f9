"""Frame sources, named by jetson-inference style URIs and opened through OpenCV.

* ``csi://N``                      - MIPI CSI camera N, an ``nvarguscamerasrc`` GStreamer pipeline;
* ``/dev/videoN``, ``v4l2:///dev/videoN`` - a V4L2 (USB) camera;
* ``rtsp://...``, ``http(s)://...`` - a network stream (FFmpeg, else a GStreamer pipeline);
* ``file.mp4`` (or ``file://file.mp4``) - a video file;
* a folder of images (sorted by name), or one image file - for replays, decoded as ``classify``
  decodes them (:func:`~..preprocess.load_image`, PIL), so a file gives both the same input.

A live source (camera or network stream) that stops delivering frames is *lost*; a file or
a folder that runs out has *ended*.  :class:`ReconnectingSource` reopens lost sources.
"""

from __future__ import annotations

import os
import time
from typing import List, Optional, Tuple

import numpy as np

from ..errors import MissingDependencyError, SourceError, UsageError
from ..preprocess import IMAGE_EXTS, folder_images, load_image
from .frames import swap_rb

OK, CORRUPT, END, LOST = "ok", "corrupt", "end", "lost"


def require_cv2():
    """Import OpenCV (quietly) or raise the one-line missing-dependency error."""
    os.environ.setdefault("OPENCV_LOG_LEVEL", "ERROR")
    os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")
    try:
        import cv2
    except ImportError:
        raise MissingDependencyError("cv2 (OpenCV)", "camera") from None
    return cv2


def build_flag(cv2, name: str) -> bool:
    """True when OpenCV's build information says ``name: YES`` (e.g. GStreamer, FFMPEG)."""
    for line in cv2.getBuildInformation().splitlines():
        key, _, value = line.strip().partition(":")
        if key.strip().lower() == name.lower():
            return value.strip().upper().startswith("YES")
    return False


def csi_pipeline(sensor: int, width: int, height: int, rate: float) -> str:
    """The GStreamer pipeline of a Jetson CSI camera (Argus), ending in BGR frames for OpenCV."""
    return (
        "nvarguscamerasrc sensor-id={} ! video/x-raw(memory:NVMM), width=(int){}, height=(int){}, "
        "framerate=(fraction){}/1, format=(string)NV12 ! nvvidconv ! video/x-raw, format=(string)BGRx ! "
        "videoconvert ! video/x-raw, format=(string)BGR ! appsink drop=true max-buffers=1"
    ).format(sensor, width, height, int(round(rate)))


class Options:
    """--input-width / --input-height / --input-rate (0 = the source's own)."""

    def __init__(self, width: int = 0, height: int = 0, rate: float = 0.0):
        if width < 0 or height < 0 or rate < 0:
            raise UsageError("--input-width, --input-height and --input-rate must be >= 0")
        self.width, self.height, self.rate = int(width), int(height), float(rate)


class Source:
    live = False
    kind = "source"

    def __init__(self, uri: str, options: Options):
        self.uri = uri
        self.options = options
        self.current: Optional[str] = None  # the image file of the frame last read (image sources only)
        self.fps = 0.0
        self._next = 0.0

    def open(self) -> None:
        raise NotImplementedError

    def read(self) -> Tuple[str, Optional[np.ndarray]]:
        raise NotImplementedError

    def close(self) -> None:
        pass

    def pace(self) -> None:
        """Replay files and folders at --input-rate when it is given (live sources keep their own)."""
        if self.live or self.options.rate <= 0:
            return
        now = time.perf_counter()
        if self._next > now:
            time.sleep(self._next - now)
        self._next = max(now, self._next) + 1.0 / self.options.rate

    def resize(self, frame: np.ndarray) -> np.ndarray:
        o = self.options
        if self.live or not (o.width or o.height) or (frame.shape[1], frame.shape[0]) == (o.width, o.height):
            return frame
        cv2 = require_cv2()
        return cv2.resize(frame, (o.width or frame.shape[1], o.height or frame.shape[0]), interpolation=cv2.INTER_AREA)

    def describe(self) -> str:
        return "{} {}".format(self.kind, self.uri)


def valid_frame(frame) -> bool:
    return (
        isinstance(frame, np.ndarray)
        and frame.dtype == np.uint8
        and frame.ndim in (2, 3)
        and frame.size > 0
        and (frame.ndim == 2 or frame.shape[2] in (1, 3, 4))
    )


class CaptureSource(Source):
    """Anything cv2.VideoCapture opens: cameras, streams, video files."""

    def __init__(self, uri, options, target, api, kind, live, props=True):
        super().__init__(uri, options)
        self.target, self.api, self.kind, self.live, self.props = target, api, kind, live, props
        self.cap = None

    def open(self):
        cv2 = require_cv2()
        self.close()
        cap = cv2.VideoCapture(self.target, self.api)
        if not cap.isOpened():
            cap.release()
            raise SourceError("cannot open {}".format(self.describe()))
        o = self.options
        if self.props and self.live:
            if o.width:
                cap.set(cv2.CAP_PROP_FRAME_WIDTH, o.width)
            if o.height:
                cap.set(cv2.CAP_PROP_FRAME_HEIGHT, o.height)
            if o.rate:
                cap.set(cv2.CAP_PROP_FPS, o.rate)
        fps = cap.get(cv2.CAP_PROP_FPS)
        self.fps = float(fps) if 0 < fps < 1000 else 0.0
        self.cap = cap

    def read(self):
        if self.cap is None:
            return (LOST if self.live else END), None
        self.pace()
        ok, frame = self.cap.read()
        if not ok:
            return (LOST if self.live else END), None
        if not valid_frame(frame):
            return CORRUPT, None
        return OK, self.resize(frame)

    def close(self):
        if self.cap is not None:
            self.cap.release()
            self.cap = None


class FolderSource(Source):
    """The image files under a folder in ``classify``'s order (sub-folders included), or one image file,
    decoded as ``classify`` decodes them and handed on in OpenCV's BGR order (an unreadable one: CORRUPT);
    ``current`` names the file of the frame last read."""

    kind = "image folder"

    def __init__(self, uri, options):
        super().__init__(uri, options)
        if os.path.isdir(uri):
            self.files: List[str] = folder_images(uri, IMAGE_EXTS)
        else:
            self.kind = "image"
            self.files = [uri]
        if not self.files:
            raise UsageError("{}: no images in this folder ({})".format(uri, ", ".join(IMAGE_EXTS)))
        self.pos = 0
        self.fps = options.rate

    def open(self):
        self.pos = 0

    def read(self):
        if self.pos >= len(self.files):
            return END, None
        self.pace()
        path = self.current = self.files[self.pos]
        self.pos += 1
        try:
            frame = swap_rb(load_image(path))
        except UsageError:
            return CORRUPT, None
        return (OK, self.resize(frame)) if valid_frame(frame) else (CORRUPT, None)


def open_source(uri: str, options: Options) -> Source:
    """The source *uri* names (not yet opened)."""
    cv2 = require_cv2()
    o = options
    if uri.startswith("csi://"):
        sensor = uri[len("csi://") :]
        if not sensor.isdigit():
            raise UsageError("{}: expected csi://N with a sensor number".format(uri))
        if not build_flag(cv2, "GStreamer"):
            raise SourceError(
                "{} needs OpenCV built with GStreamer (JetPack's python3-opencv); this OpenCV has none".format(uri)
            )
        pipe = csi_pipeline(int(sensor), o.width or 1280, o.height or 720, o.rate or 30)
        return CaptureSource(uri, o, pipe, cv2.CAP_GSTREAMER, "CSI camera", True, props=False)
    if uri.startswith("v4l2://"):
        uri = uri[len("v4l2://") :]
    if uri.startswith("/dev/video"):
        if not uri[len("/dev/video") :].isdigit():
            raise UsageError("{}: expected /dev/videoN".format(uri))
        return CaptureSource(uri, o, uri, cv2.CAP_V4L2, "V4L2 camera", True)
    if uri.startswith(("rtsp://", "rtsps://", "http://", "https://")):
        return network_source(cv2, uri, o)
    if uri.startswith("file://"):
        uri = uri[len("file://") :]
    if "://" in uri:
        raise UsageError(
            "{}: unsupported input; use csi://N, /dev/videoN, rtsp://..., a video file or an image folder".format(uri)
        )
    if os.path.isdir(uri) or (os.path.isfile(uri) and uri.lower().endswith(IMAGE_EXTS)):
        return FolderSource(uri, o)
    if not os.path.isfile(uri):
        raise UsageError("{}: no such video file, image or folder".format(uri))
    return CaptureSource(uri, o, uri, cv2.CAP_ANY, "video file", False)


def network_source(cv2, uri: str, o: Options) -> Source:
    if build_flag(cv2, "FFMPEG"):
        return CaptureSource(uri, o, uri, cv2.CAP_FFMPEG, "stream", True, props=False)
    if build_flag(cv2, "GStreamer") and uri.startswith("rtsp"):
        pipe = (
            "rtspsrc location={} latency=200 ! decodebin ! videoconvert ! video/x-raw, format=(string)BGR ! "
            "appsink drop=true max-buffers=1"
        ).format(uri)
        return CaptureSource(uri, o, pipe, cv2.CAP_GSTREAMER, "stream", True, props=False)
    raise SourceError("{} needs OpenCV built with FFmpeg or GStreamer; this OpenCV has neither".format(uri))


class ReconnectingSource:
    """A source whose losses get at most *attempts* reopen tries, with exponential backoff."""

    def __init__(
        self,
        source: Source,
        attempts: int = 5,
        delay: float = 0.5,
        max_delay: float = 8.0,
        stopped=lambda: False,
        log=lambda msg: None,
    ):
        if attempts < 0 or delay < 0:
            raise UsageError("--reconnect and --reconnect-delay must be >= 0")
        self.source, self.attempts, self.delay, self.max_delay = source, int(attempts), float(delay), float(max_delay)
        self.stopped, self.log = stopped, log
        self.reconnects = 0  # successful reopenings
        self.failed_attempts = 0  # reopen tries that failed

    def open(self):
        self.source.open()

    @property
    def current(self) -> Optional[str]:
        return self.source.current

    def read(self) -> Tuple[str, Optional[np.ndarray]]:
        status, frame = self.source.read()
        if status != LOST:
            return status, frame
        self.log("{} lost; reconnecting (at most {} attempts)".format(self.source.describe(), self.attempts))
        for attempt in range(1, self.attempts + 1):
            if not self._sleep(min(self.delay * 2 ** (attempt - 1), self.max_delay)):
                return END, None
            try:
                self.source.open()
            except SourceError:
                self.failed_attempts += 1
                continue
            status, frame = self.source.read()
            if status != LOST:
                self.reconnects += 1
                self.log("{} reconnected (attempt {})".format(self.source.describe(), attempt))
                return status, frame
            self.failed_attempts += 1
        raise SourceError("{} lost; {} reconnect attempts failed".format(self.source.describe(), self.attempts))

    def _sleep(self, seconds: float) -> bool:
        """Back off in short slices so a signal stops the wait; False when stopped."""
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            if self.stopped():
                return False
            time.sleep(min(0.05, max(0.0, end - time.monotonic())))
        return not self.stopped()

    def close(self):
        self.source.close()
