"""``edgetool camera BUNDLE INPUT [OUTPUT]``: the on-device classification loop."""

from __future__ import annotations

import sys
from typing import List

import click

from ..choices import STREAM_POLICIES
from ..errors import UsageError
from ..options import backend_option, check_top, helped, routing_options, top_option, verify_switch_option
from .frames import FLIPS
from .outputs import CODECS

POLICY_HELP = (
    "Routing: sticky (subclass network stays loaded, with hysteresis), per-image (superclass "
    "pass on every frame), batched, topk, or superclass (base network alone). A flat bundle has one "
    "network and no routing: every policy gives its labels (superclass: their superclasses)."
)


def build_outputs(output, headless, fps, video=None):
    """The outputs OUTPUT names; *video*: the --output-* settings (size, codec, bitrate) of a video."""
    from .outputs import Display, RtpOut, VideoOut

    video = video or {}
    if output is None or output.startswith("display://"):
        if any(video.values()):
            raise UsageError("--output-width/--output-height/--output-codec/--bitrate set a video OUTPUT; give one")
        if output is None:
            return [] if headless else [Display()]
        if headless:
            raise UsageError("--headless and a display:// output contradict each other")
        return [Display("edgetool " + output)]
    if output.startswith("rtsp://"):
        raise UsageError(
            "{}: an rtsp:// output needs an RTSP server, which OpenCV is not; stream rtp://HOST:PORT and "
            "serve or receive that".format(output)
        )
    if output.startswith("rtp://"):
        if video.get("codec") not in (None, "h264"):
            raise UsageError("rtp:// output is H.264; --output-codec {} is for video files".format(video["codec"]))
        return [RtpOut(output, fps, video.get("size"), video.get("bitrate") or 0)]
    if "://" in output and not output.startswith("file://"):
        raise UsageError("{}: unsupported output; use display://0, rtp://HOST:PORT or a video file".format(output))
    path = output[len("file://") :] if output.startswith("file://") else output
    return [VideoOut(path, fps, video.get("size"), video.get("codec"), video.get("bitrate") or 0)]


HELP = {
    "--input-width": "Capture width (0: the source's own).",
    "--input-height": "Capture height (0: the source's own).",
    "--input-rate": "Camera frame rate; for files and folders, replay at this rate (0: as fast as possible).",
    "--policy": POLICY_HELP,
    "--enter": "sticky: superclass confidence needed to move to a different superclass (> 1: only at scene cuts).",
    "--leave": "sticky: re-route when the subclass confidence falls below this.",
    "--interval": "sticky: superclass pass at least every N frames.",
    "--scene-cut": "Mean absolute frame change (0..1) that counts as a scene cut (fresh superclass pass); 0: off.",
    "--batch": "Frames classified together.",
    "--smoothing": "Temporal label smoothing: frames (>= 1) or the newest frame's weight (0..1); 0: off.",
    "--json-out": "Write the JSON lines to this file instead of stdout.",
    "--max-frames": "Stop after this many frames (0: no limit).",
    "--reconnect": "Reconnect attempts for a lost camera or stream.",
    "--reconnect-delay": "First backoff in seconds (doubles, max 8 s).",
    "--output-rate": "Output video frame rate when the source has none.",
    "--input-flip": "Turn every input frame first (a camera mounted upside down: rotate-180).",
    "--input-loop": "Play a video file or image folder this many more times after its end (-1: forever).",
    "--output-width": "Output video width (0: the input frame's).",
    "--output-height": "Output video height (0: the input frame's).",
    "--output-codec": "Output video codec (what this OpenCV can encode varies; a codec it lacks is one error line).",
    "--bitrate": "Output video bitrate in bits/s (0: the encoder's).",
    "--threads": "onnxruntime: intra-op threads (0: its default).",
}
option = helped(HELP)
CONTAINER_CODEC = "the container's: mp4v for .mp4, MJPG for .avi, XVID for .mkv"


@click.command()
@click.argument("bundle", type=click.Path())
@click.argument("input_uri", metavar="INPUT")
@click.argument("output", required=False)
@backend_option
@click.option("--headless", is_flag=True, help="No display window.")
@option("--input-width", 0)
@option("--input-height", 0)
@option("--input-rate", 0.0)
@option("--policy", "sticky", type=click.Choice(list(STREAM_POLICIES)))
@option("--enter", 0.6)
@option("--leave", 0.4)
@option("--interval", 30)
@option("--scene-cut", 0.08)
@routing_options
@option("--batch", 1)
@option("--smoothing", 0.0)
@click.option("--json", "as_json", is_flag=True, help="JSON lines on stdout: one record per frame, then a summary.")
@option("--json-out", type=click.Path(), show_default="none")
@option("--max-frames", 0)
@option("--reconnect", 5)
@option("--reconnect-delay", 0.5)
@option("--output-rate", 30.0)
@option("--input-flip", "none", type=click.Choice(list(FLIPS)))
@option("--input-loop", 0)
@option("--output-width", 0)
@option("--output-height", 0)
@option("--output-codec", type=click.Choice(sorted(CODECS)), show_default=CONTAINER_CODEC)
@option("--bitrate", 0)
@option("--threads", 0)
@top_option
@verify_switch_option
def camera(bundle, input_uri, output, **o):
    """Classify frames from INPUT live with BUNDLE; show or write them to OUTPUT.

    \b
    INPUT:  csi://0 | /dev/video0 | v4l2:///dev/video0 | rtsp://host:port/path | file.mp4 | image folder
    OUTPUT: display://0 (the default unless --headless) | out.mp4 / out.avi / out.mkv | rtp://host:port
    """
    from .served import Served

    _session(input_uri, output, o, lambda *args: Served(bundle, *args))


def serve(root, input_uri, output, **o):
    """Run the camera loop on the version deploy root ROOT serves (ROOT/current), and follow it: after
    a deploy or a rollback the new version is loaded beside the old one and takes over between two
    frames; one that fails to load is logged and the old one keeps serving.  INPUT defaults to csi://0.
    Every JSON record names the version that classified its frame; `edgetool status` shows it.
    `edgetool target service` writes a systemd unit that runs this."""
    from .served import Follower

    log = lambda msg: click.echo(msg, err=True)  # noqa: E731
    _session(input_uri, output, o, lambda *args: Follower(root, *args, log=log))


def _session(input_uri, output, o, make_served):
    """Check the options, open the source and what is served, run the loop, report."""
    from .schedule import SceneCut, check_settings
    from .sources import Options, ReconnectingSource, open_source

    _check_options(o["batch"], o["max_frames"], o["output_rate"], o["as_json"], o["json_out"])
    check_top(o["top"])
    video = _video_settings(o["output_width"], o["output_height"], o["output_codec"], o["bitrate"], o["input_loop"])
    check_settings(o["policy"], o["enter"], o["leave"], o["interval"], o["topk"], o["gate"], o["beta"])
    cut = SceneCut(o["scene_cut"])
    log = lambda msg: click.echo(msg, err=True)  # noqa: E731
    src = open_source(input_uri, Options(o["input_width"], o["input_height"], o["input_rate"]))
    source = ReconnectingSource(src, attempts=o["reconnect"], delay=o["reconnect_delay"], log=log)
    kw = {"threads": o["threads"]} if o["backend"] == "onnxruntime" and o["threads"] else {}
    kw.update({"verify_switch": log} if o["verify_switch"] else {})
    clf_kw = {k: o[k] for k in ("policy", "enter", "leave", "interval", "gate", "beta")}
    clf_kw["k"] = o["topk"]
    served = make_served(o["backend"], kw, clf_kw, o["smoothing"])
    if served.bundle.kind == "flat":  # say so at the start, not only in the summary
        log(policy_line(served.clf.settings()))
    try:
        source.open()
        status = sys.stderr.isatty() and not o["as_json"]
        loop_kw = dict(batch=o["batch"], cut=cut, max_frames=o["max_frames"], log=log, status=status)
        loop_kw.update(flip=o["input_flip"], loops=o["input_loop"], top=o["top"])
        fps = src.fps or o["input_rate"] or o["output_rate"]
        json_path = o["json_out"] if o["json_out"] else ("-" if o["as_json"] else None)
        loop, summary = run_loop(served, source, loop_kw, (output, o["headless"], fps, video), json_path)
    finally:
        source.close()
        served.close()
    _report(loop, summary, o["as_json"])


def _check_options(batch, max_frames, output_rate, as_json, json_out):
    if batch < 1 or max_frames < 0 or output_rate <= 0:
        raise UsageError("--batch must be >= 1, --max-frames >= 0 and --output-rate > 0")
    if as_json and json_out:
        raise UsageError("--json and --json-out: choose one")
    if json_out:
        from ..files import check_output

        check_output(json_out, "--json-out")


def _video_settings(width, height, codec, bitrate, loops) -> dict:
    """The output video's settings, checked: a size needs both sides, nothing negative."""
    if width < 0 or height < 0 or bitrate < 0 or loops < -1:
        raise UsageError("--output-width, --output-height and --bitrate must be >= 0, --input-loop >= -1")
    if bool(width) != bool(height):
        raise UsageError("--output-width and --output-height go together (0 and 0: the input frame's size)")
    return {"size": (width, height) if width else None, "codec": codec, "bitrate": bitrate}


def _report(loop, summary, as_json):
    """The summary on stderr (stdout carries the JSON lines with --json); a lost source fails the command."""
    for line in summary_lines(summary):
        click.echo(line, err=as_json)
    if loop.output_error is not None:
        raise loop.output_error
    if loop.lost is not None:
        raise loop.lost
    if loop.stop_reason in ("SIGTERM", "SIGHUP"):  # stopped cleanly, summary written: still say it was terminated
        import signal

        from ..signals import Terminated

        raise Terminated(getattr(signal, loop.stop_reason))


def run_loop(served, source, loop_kw, output_spec, json_path):
    """Open the outputs and run the loop on what *served* serves; the JSON lines end with the summary."""
    from ..errors import OutputError
    from .loop import CameraLoop
    from .writers import JsonLines

    outputs = build_outputs(*output_spec)
    jl = None if json_path is None else JsonLines(None if json_path == "-" else json_path)
    for o in outputs + ([jl] if jl is not None else []):
        for p in getattr(o, "removed_stale", []):
            click.echo("removed {}, left by a run that was stopped".format(p), err=True)
    smoother = served.smoother if served.smoother.active else None
    loop = CameraLoop(
        source, served.clf, served.bundle.input, outputs=outputs, json_out=jl, smoother=smoother, **loop_kw
    )
    loop.served, loop.version = served, served.version
    served.clf.on_error = loop.error
    complete = False
    try:
        summary = loop.run()
        if jl is not None:
            try:
                jl.write(summary)
            except OutputError as exc:
                loop._output_failed(exc)
        complete = True
    finally:
        if jl is not None:
            try:
                jl.close(complete)
            except OutputError as exc:
                if not complete:
                    raise
                loop._output_failed(exc)
    return loop, summary


serve_command = click.Command(
    "serve",
    callback=serve,
    help=serve.__doc__,
    params=[
        click.Argument(["root"], type=click.Path()),
        click.Argument(["input_uri"], metavar="[INPUT]", required=False, default="csi://0"),
        click.Argument(["output"], required=False),
    ]
    + [p for p in camera.params if isinstance(p, click.Option)],
)


def summary_lines(s: dict) -> List[str]:
    """The summary for people, a few lines."""
    lines = [
        "{} frames in {:.2f} s: {:.1f} FPS ({}; stopped: {})".format(
            s["frames"], s["elapsed_s"], s["fps"], s["source"], s["stopped"]
        ),
        "switches {}  superclass changes {}  scene cuts {}  dropped frames {}  errors {}  reconnects {}".format(
            s["switches"], s["superclass_changes"], s["scene_cuts"], s["dropped_frames"], s["errors"], s["reconnects"]
        ),
        policy_line(s["settings"]),
    ]
    med = {k: v.get("median") for k, v in s["stages_ms"].items() if v.get("count")}
    if med:
        lines.append("median ms per frame: " + "  ".join("{} {:.3f}".format(k, v) for k, v in med.items()))
    return lines


def policy_line(settings: dict) -> str:
    """The policy and its settings in words; a flat bundle's says it has no routing."""
    rest = ["{}={}".format(k, v) for k, v in settings.items() if k not in ("policy", "requested_policy")]
    if settings.get("policy") != "flat":
        return " ".join(["policy {}".format(settings.get("policy"))] + rest)
    asked = settings.get("requested_policy")
    note = "superclass labels only" if asked == "superclass" else "--policy {} has nothing to route".format(asked)
    return " ".join(["policy flat (one network, no routing; {})".format(note)] + rest)
