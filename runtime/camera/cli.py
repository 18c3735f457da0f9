"""``edgetool camera BUNDLE INPUT [OUTPUT]``: the on-device classification loop."""

from __future__ import annotations

import sys

import click

from ..choices import STREAM_POLICIES
from ..errors import UsageError
from ..options import backend_option, routing_options, verify_switch_option

POLICY_HELP = (
    "Routing: sticky (subclass network stays loaded, with hysteresis), per-image (superclass "
    "pass on every frame), batched, topk, or superclass (base network alone)."
)


def build_outputs(output, headless, fps):
    from .outputs import Display, VideoOut

    if output is None:
        return [] if headless else [Display()]
    if output.startswith("display://"):
        if headless:
            raise UsageError("--headless and a display:// output contradict each other")
        return [Display("edgetool " + output)]
    if "://" in output and not output.startswith("file://"):
        raise UsageError("{}: unsupported output; use display://0 or a video file".format(output))
    return [VideoOut(output[len("file://") :] if output.startswith("file://") else output, fps)]


@click.command()
@click.argument("bundle", type=click.Path())
@click.argument("input_uri", metavar="INPUT")
@click.argument("output", required=False)
@backend_option
@click.option("--headless", is_flag=True, help="No display window.")
@click.option("--input-width", default=0, show_default=True, help="Capture width (0: the source's own).")
@click.option("--input-height", default=0, show_default=True, help="Capture height (0: the source's own).")
@click.option(
    "--input-rate",
    default=0.0,
    show_default=True,
    help="Camera frame rate; for files and folders, replay at this rate (0: as fast as possible).",
)
@click.option(
    "--policy",
    default="sticky",
    show_default=True,
    type=click.Choice(list(STREAM_POLICIES)),
    help=POLICY_HELP,
)
@click.option(
    "--enter",
    default=0.6,
    show_default=True,
    help="sticky: superclass confidence needed to move to a different superclass (> 1: only at scene cuts).",
)
@click.option(
    "--leave", default=0.4, show_default=True, help="sticky: re-route when the subclass confidence falls below this."
)
@click.option("--interval", default=30, show_default=True, help="sticky: superclass pass at least every N frames.")
@click.option(
    "--scene-cut",
    default=0.08,
    show_default=True,
    help="Mean absolute frame change (0..1) that counts as a scene cut (fresh superclass pass); 0: off.",
)
@routing_options
@click.option("--batch", default=1, show_default=True, help="Frames classified together.")
@click.option(
    "--smoothing",
    default=0.0,
    show_default=True,
    help="Temporal label smoothing: frames (>= 1) or the newest frame's weight (0..1); 0: off.",
)
@click.option("--json", "as_json", is_flag=True, help="JSON lines on stdout: one record per frame, then a summary.")
@click.option(
    "--json-out", type=click.Path(), show_default="none", help="Write the JSON lines to this file instead of stdout."
)
@click.option("--max-frames", default=0, show_default=True, help="Stop after this many frames (0: no limit).")
@click.option("--reconnect", default=5, show_default=True, help="Reconnect attempts for a lost camera or stream.")
@click.option("--reconnect-delay", default=0.5, show_default=True, help="First backoff in seconds (doubles, max 8 s).")
@click.option(
    "--output-rate", default=30.0, show_default=True, help="Output video frame rate when the source has none."
)
@click.option("--threads", default=0, show_default=True, help="onnxruntime: intra-op threads (0: its default).")
@verify_switch_option
def camera(
    bundle,
    input_uri,
    output,
    backend,
    headless,
    input_width,
    input_height,
    input_rate,
    policy,
    enter,
    leave,
    interval,
    scene_cut,
    gate,
    topk,
    beta,
    batch,
    smoothing,
    as_json,
    json_out,
    max_frames,
    reconnect,
    reconnect_delay,
    output_rate,
    threads,
    verify_switch,
):
    """Classify frames from INPUT live with BUNDLE; show or write them to OUTPUT.

    \b
    INPUT:  csi://0 | /dev/video0 | v4l2:///dev/video0 | rtsp://host:port/path | file.mp4 | image folder
    OUTPUT: display://0 (the default unless --headless) | out.mp4 / out.avi / out.mkv
    """
    from ..cli import open_bundle
    from .schedule import SceneCut, Smoother, check_settings
    from .sources import Options, ReconnectingSource, open_source

    _check_options(batch, max_frames, output_rate, as_json, json_out)
    check_settings(policy, enter, leave, interval, topk, gate, beta)
    cut = SceneCut(scene_cut)
    log = lambda msg: click.echo(msg, err=True)  # noqa: E731
    src = open_source(input_uri, Options(input_width, input_height, input_rate))
    source = ReconnectingSource(src, attempts=reconnect, delay=reconnect_delay, log=log)
    b = open_bundle(bundle)
    smoother = Smoother(b, smoothing)
    source.open()
    try:
        kw = {"threads": threads} if backend == "onnxruntime" and threads else {}
        kw.update({"verify_switch": log} if verify_switch else {})
        clf_kw = dict(policy=policy, enter=enter, leave=leave, interval=interval, gate=gate, k=topk, beta=beta)
        smooth = smoother if smoother.active else None
        status = sys.stderr.isatty() and not as_json
        loop_kw = dict(batch=batch, cut=cut, smoother=smooth, max_frames=max_frames, log=log, status=status)
        fps = src.fps or input_rate or output_rate
        json_path = json_out if json_out else ("-" if as_json else None)
        loop, summary = run_loop(b, backend, kw, source, clf_kw, loop_kw, (output, headless, fps), json_path)
    finally:
        source.close()
    _report(loop, summary, as_json)


def _check_options(batch, max_frames, output_rate, as_json, json_out):
    if batch < 1 or max_frames < 0 or output_rate <= 0:
        raise UsageError("--batch must be >= 1, --max-frames >= 0 and --output-rate > 0")
    if as_json and json_out:
        raise UsageError("--json and --json-out: choose one")
    if json_out:
        from ..files import check_output

        check_output(json_out, "--json-out")


def _report(loop, summary, as_json):
    """The summary on stderr (stdout carries the JSON lines with --json); a lost source fails the command."""
    from .loop import summary_lines

    for line in summary_lines(summary):
        click.echo(line, err=as_json)
    if loop.lost is not None:
        raise loop.lost
    if loop.stop_reason == "SIGTERM":  # stopped cleanly, summary written: still say it was terminated (143)
        import signal

        from ..signals import Terminated

        raise Terminated(signal.SIGTERM)


def run_loop(bundle, backend, backend_kw, source, clf_kw, loop_kw, output_spec, json_path):
    """Load the backend, open the outputs, run the loop; the JSON lines end with the summary."""
    from ..cli import make_backend
    from .loop import CameraLoop
    from .outputs import JsonLines
    from .schedule import StreamClassifier

    with make_backend(bundle, backend, **backend_kw) as be:
        clf = StreamClassifier(be, **clf_kw)
        outputs = build_outputs(*output_spec)
        jl = None if json_path is None else JsonLines(None if json_path == "-" else json_path)
        loop = CameraLoop(source, clf, bundle.input, outputs=outputs, json_out=jl, **loop_kw)
        clf.on_error = loop.error
        try:
            summary = loop.run()
            if jl is not None:
                jl.write(summary)
        finally:
            if jl is not None:
                jl.close()
    return loop, summary
