"""The capture -> classify -> render loop, with its statistics and clean stops.

SIGINT, SIGTERM and SIGHUP end the loop after the frame in hand; the outputs are closed and the
summary (frames, FPS, switches, dropped frames, errors) is still produced.  An output that
cannot be written (a full disk) stops the loop the same way, counted as an error; the CLI then
fails with its error line.
"""

from __future__ import annotations

import signal
import sys
import threading
import time
from typing import Any, Callable, Dict, List, Optional

import numpy as np

from ..backends.base import summarize
from ..errors import OutputError, SourceError
from ..preprocess import normalize, to_input_array
from .frames import flip_frame, swap_rb
from .outputs import canvas, draw_overlay
from .sources import CORRUPT, END, OK

STAGES = ("capture", "preprocess", "infer", "switch", "classify", "render")


class Stats:
    def __init__(self):
        self.frames = 0
        self.dropped = 0
        self.errors: List[str] = []
        self.superclass_changes = 0
        self.last_superclass: Optional[str] = None
        self.t0: Optional[float] = None
        self.t1: Optional[float] = None
        self.stages: Dict[str, List[float]] = {s: [] for s in STAGES}
        self.fps_now = 0.0

    def elapsed(self) -> float:
        if self.t0 is None:
            return 0.0
        return (self.t1 or time.perf_counter()) - self.t0


class CameraLoop:
    def __init__(
        self,
        source,
        clf,
        spec: dict,
        outputs=(),
        json_out=None,
        batch: int = 1,
        cut=None,
        smoother=None,
        max_frames: int = 0,
        log: Callable[[str], None] = lambda m: None,
        status=False,
        flip: str = "none",
        loops: int = 0,
        top: int = 0,
    ):
        """*flip*: how each frame is turned first (:data:`.frames.FLIPS`); *loops*: how many more
        times a file or folder is played after its end (-1: forever); *top*: classes per record's ``topk``."""
        self.source, self.clf, self.spec = source, clf, spec
        self.outputs, self.json_out = list(outputs), json_out
        self.batch, self.cut, self.smoother = max(1, int(batch)), cut, smoother
        self.max_frames, self.log, self.status = int(max_frames), log, status
        self.flip, self.loops, self.top = flip, int(loops), int(top)
        self.served: Any = None  # what is served (.served.Served); polled between batches
        self.version: Optional[str] = None  # the deploy root's version being served (edgetool serve)
        self.stats = Stats()
        self.stop_reason: Optional[str] = None
        self.lost: Optional[SourceError] = None
        self.output_error: Optional[OutputError] = None
        self._status_at = 0.0
        if hasattr(source, "stopped"):
            source.stopped = self.stopped  # a reconnect backoff ends on SIGINT/SIGTERM too

    # -- control ---------------------------------------------------------------------------------
    def _on_signal(self, signum, frame):
        self.stop_reason = signal.Signals(signum).name

    def stopped(self) -> bool:
        return self.stop_reason is not None

    def swap(self, clf, spec: dict, version: Optional[str], smoother=None) -> None:
        """Serve *clf* (of another bundle) from the next frame on."""
        self.clf, self.spec, self.version, self.smoother = clf, spec, version, smoother
        clf.on_error = self.error

    def error(self, msg: str) -> None:
        self.stats.errors.append(msg)
        self.log("warning: " + msg)

    def _output_failed(self, exc: OutputError) -> None:
        if self.output_error is None:
            self.output_error = exc  # the CLI's error line, after the summary
        self.stop_reason = "output failed"
        self.stats.errors.append(str(exc))

    def run(self) -> dict:
        handlers = {}
        if threading.current_thread() is threading.main_thread():
            for name in ("SIGINT", "SIGTERM", "SIGHUP"):
                s = getattr(signal, name, None)
                if s is not None:
                    handlers[s] = signal.signal(s, self._on_signal)
        complete = False  # False: an unexpected error ends the loop, and no output is published
        try:  # the source is open already
            while not self.stopped():
                if self.served is not None:
                    self.served.poll(self)  # a deploy or rollback: the next frames go to the new version
                frames = self._capture()
                if frames:
                    self._process(frames)
                if self.max_frames and self.stats.frames >= self.max_frames:
                    self.stop_reason = self.stop_reason or "max frames"
            complete = True
        except SourceError as exc:
            self.lost = exc  # the CLI's error line; counted here, not logged twice
            self.stop_reason = "source lost"
            self.stats.errors.append(str(exc))
            complete = True
        except OutputError as exc:  # a full disk: the loop stops, the other outputs are finished
            self._output_failed(exc)
            complete = True
        finally:
            self.stats.t1 = time.perf_counter()
            self.source.close()
            for o in self.outputs:  # a signal meanwhile only sets the stop reason: the files finish
                try:
                    o.close(complete)
                except OutputError as exc:
                    self._output_failed(exc)
            for s, h in handlers.items():
                signal.signal(s, h)
            if self.status:
                sys.stderr.write("\n")
        return self.summary()

    # -- stages ----------------------------------------------------------------------------------
    def _capture(self) -> list:
        """Up to --batch frames: (frame, capture time, capture ms); sets the stop reason at the end."""
        out: List[Any] = []
        limit = self.batch
        if self.max_frames:
            limit = min(limit, self.max_frames - self.stats.frames)
        while len(out) < limit and not self.stopped():
            t = time.perf_counter()
            if self.stats.t0 is None:
                self.stats.t0 = t
            status, frame = self.source.read()
            if status == END and self.loops != 0:  # --input-loop: play the file or folder again
                self.loops -= 1 if self.loops > 0 else 0
                self.source.close()
                self.source.open()
                continue
            if status == END:
                self.stop_reason = self.stop_reason or "end of stream"
                break
            if status == CORRUPT:
                self.stats.dropped += 1
                continue
            if status == OK:
                frame = flip_frame(frame, self.flip)
                out.append((frame, time.time(), (time.perf_counter() - t) * 1e3, getattr(self.source, "current", None)))
        return out

    def _preprocess(self, frames):
        """The network's input of each BGR frame: swapped to RGB, then the one preprocessing ``classify``
        uses (:func:`~..preprocess.to_input_array`, :func:`~..preprocess.normalize`); the scene cuts are
        judged on the network-sized frames."""
        smalls = [to_input_array(swap_rb(frame), self.spec) for frame, *_ in frames]
        cuts = [self.cut(s) if self.cut is not None else False for s in smalls]
        return normalize(np.stack(smalls), self.spec), cuts

    def _process(self, frames) -> None:
        t0 = time.perf_counter()
        x, cuts = self._preprocess(frames)
        t1 = time.perf_counter()
        be = self.clf.backend
        marks = {k: len(be.timings.samples.get(k, [])) for k in ("infer", "switch")}
        switches = be.switch_count
        preds = self.clf.classify_stream(x, cuts)
        t2 = time.perf_counter()
        n = len(frames)
        new = {k: sum(be.timings.samples.get(k, [])[marks[k] :]) / n for k in marks}
        shared = {
            "preprocess": (t1 - t0) * 1e3 / n,
            "classify": (t2 - t1) * 1e3 / n,
            "infer": new["infer"],
            "switch": new["switch"],
        }
        for (frame, stamp, cap_ms, image), pred, cut in zip(frames, preds, cuts):
            ms = dict(shared, capture=cap_ms)
            self._emit(frame, stamp, ms, pred, cut, n, be.switch_count - switches, image)

    def _emit(self, frame, stamp, ms, pred, cut, n, switches, image=None) -> None:
        st = self.stats
        if cut and self.smoother is not None:
            self.smoother.reset()
        shown = pred.to_dict()  # the fields of `classify --json`, indices included
        record = {"type": "frame", "frame": st.frames, "time": stamp}
        if image is not None:
            record["image"] = image  # as `classify --json` names it
        if self.version is not None:
            record["version"] = self.version
        if self.smoother is not None and self.smoother.active:
            record.update(self.smoother(pred))
            record["frame_prediction"] = shown
        else:
            record.update(shown)
        record["network"] = _network(self.clf, pred)
        if self.top:  # the frame's own network output, with --smoothing too
            record["topk"] = pred.top(self.top)
        record.update(scene_cut=bool(cut), batch=n, batch_switches=switches)
        t = time.perf_counter()
        now = t - (st.t0 if st.t0 is not None else t)
        st.fps_now = (st.frames + 1) / now if now > 0 else 0.0
        if self.outputs:
            img = draw_overlay(
                canvas(frame),
                [
                    "{} / {}  {:.2f}".format(record["superclass"], record["class"] or "-", record["confidence"]),
                    "{:.1f} FPS  {}".format(st.fps_now, record["network"]),
                ]
                + ["{}  {:.2f}".format(t["class"], t["confidence"]) for t in record.get("topk", [])[1:]],
            )
            for o in self.outputs:
                o.write(img, (frame.shape[1], frame.shape[0]))
                if getattr(o, "closed", False):
                    self.stop_reason = self.stop_reason or "window closed"
        ms["render"] = (time.perf_counter() - t) * 1e3
        record["timings_ms"] = {k: round(ms[k], 4) for k in STAGES}
        for k in STAGES:
            st.stages[k].append(ms[k])
        if st.last_superclass is not None and record["superclass"] != st.last_superclass:
            st.superclass_changes += 1
        st.last_superclass = record["superclass"]
        st.frames += 1
        if self.json_out is not None:
            self.json_out.write(record)
        self._status(record)

    def _status(self, record) -> None:
        if not self.status or time.perf_counter() - self._status_at < 1.0:
            return
        self._status_at = time.perf_counter()
        sys.stderr.write(
            "\r{} frames  {:.1f} FPS  {} / {}      ".format(
                self.stats.frames, self.stats.fps_now, record["superclass"], record["class"] or "-"
            )
        )
        sys.stderr.flush()

    # -- summary ---------------------------------------------------------------------------------
    def summary(self) -> dict:
        st, clf, src = self.stats, self.clf, self.source
        el = st.elapsed()
        return {
            "type": "summary",
            "source": src.source.describe(),
            "stopped": self.stop_reason or "end of stream",
            "frames": st.frames,
            "elapsed_s": el,
            "fps": st.frames / el if el > 0 else 0.0,
            "switches": clf.backend.switch_count,
            "superclass_changes": st.superclass_changes,
            "superclass_passes": clf.routes,
            "scene_cuts": self.cut.cuts if self.cut is not None else 0,
            "dropped_frames": st.dropped,
            "errors": len(st.errors),
            "error_messages": st.errors,
            "reconnects": src.reconnects,
            "failed_reconnects": src.failed_attempts,
            "failed_subclass_networks": sorted(clf.bundle.superclasses[k].name for k in clf.failed),
            "settings": dict(
                clf.settings(),
                batch=self.batch,
                backend=clf.backend.name,
                scene_cut=self.cut.threshold if self.cut is not None else 0.0,
                smoothing=self.smoother.factor if self.smoother is not None else 0.0,
            ),
            "stages_ms": {k: summarize(v) for k, v in st.stages.items()},
        }


def _network(clf, pred) -> str:
    """The network that labelled a frame: a flat bundle's one network, else the base (a superclass
    label) or the routed superclass's subclass network; a flat bundle's specialist by its superclass."""
    if clf.bundle.kind == "flat" and pred.superclass in clf.bundle.specialists and pred.label is not None:
        return "specialist:" + pred.superclass_name
    if clf.bundle.kind == "flat":
        return "flat"
    return "base" if pred.label is None else "subclass:" + pred.superclass_name
