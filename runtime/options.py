"""Command-line options declared once, from the choice sets of :mod:`.choices`."""

from __future__ import annotations

import functools
from typing import Dict, Optional

import click

from . import choices
from . import commands
from .bundle import routing


def helped(helps: Dict[str, str]):
    """A ``click.option`` maker whose help text comes from *helps* by flag (one table of help per
    command keeps each declaration on one line), its default shown unless *show_default* says
    otherwise; *dest* names the parameter."""

    def option(flag: str, default=None, dest: Optional[str] = None, **kw):
        kw.setdefault("show_default", True)
        decls = (flag, dest) if dest else (flag,)
        if kw.get("is_flag"):
            default = bool(default)
        return click.option(*decls, default=default, help=helps[flag], **kw)

    return option


HELP = {
    "--codec": "Delta codec (zstd: decodes ~50x faster than 7z for ~5% more bytes, see "
    "benchmarks/results/switch_latency.json; sparse: decodes faster on large networks with few changed "
    "codes, see benchmarks/results/performance.json).",
    "--device-profile": "Device profile name or JSON file.",
    "--backend": "onnxruntime (CPU, any machine) or tensorrt (the int8 engine on an NVIDIA GPU or Jetson).",
    "--policy": "Routing for a set of files: per-image (the paper's: superclass network, then its subclass network, "
    "for every image), batched (one superclass pass per batch, one switch per predicted superclass; same "
    "predictions), or topk (tries the --k best superclasses when the superclass confidence is below --gate). "
    "Stream policies (sticky) are in `edgetool camera`.",
    "--engine-mode": "one-engine: one refittable network, switched between the base and each subclass network "
    "(the paper's); two-engine: a fixed base engine beside one refittable subclass engine.",
    "--topk": "Also give the K most confident classes with their confidences (the prediction first): each JSON record "
    "gets 'topk', a list of {class, confidence}; classify's text table a column, camera's overlay a line each. A "
    "Super-Sub bundle ranks the classes of the subclass network it ran (p_super x p_sub), a flat bundle all its "
    "classes. 0: off.",
    "--verify-switch": "On the first switch to each network, run the bundle's samples on this backend and in ONNX "
    "Runtime; stop with one error line if they disagree (a line per network checked on stderr).",
}
_option = helped(HELP)


class _FilePolicy(click.Choice):
    """A routing policy for a set of files; a stream policy is refused with the command that runs it."""

    def convert(self, value, param, ctx):
        if value not in choices.FILE_POLICIES and value in choices.POLICIES:
            from .errors import UsageError

            raise UsageError(
                "--policy {0} is a stream policy: it keeps the previous image's subclass network and superclass "
                "confidence for the next images, which holds only for consecutive frames of one scene; for files "
                "use {1}, or run the stream loop: {2}".format(
                    value, ", ".join(choices.FILE_POLICIES), commands.camera_folder(value)
                )
            )
        return super().convert(value, param, ctx)


codec_option = _option("--codec", choices.DEFAULT_CODEC, type=click.Choice(list(choices.CODECS)))
device_profile_option = _option(
    "--device-profile", None, "profile_name", show_default="the detected Jetson, else desktop-gpu"
)
backend_option = _option("--backend", choices.DEFAULT_BACKEND, type=click.Choice(list(choices.BACKENDS)))
policy_option = _option("--policy", choices.DEFAULT_POLICY, type=_FilePolicy(list(choices.FILE_POLICIES)))
engine_mode_option = _option(
    "--engine-mode", choices.DEFAULT_ENGINE_MODE, type=click.Choice(list(choices.ENGINE_MODES))
)
verify_switch_option = _option("--verify-switch", is_flag=True, show_default=False)
top_option = _option("--topk", 0, "top", type=int)


def check_top(top: int) -> None:
    """One error line for a --topk below 0."""
    if top < 0:
        from .errors import UsageError

        raise UsageError("--topk must be >= 0 (the classes to list per image; 0: off), got {}".format(top))


def weights_option(forms, help_text):
    """``--weights``: ``auto`` or one of *forms* (a subset of the weight forms)."""
    assert set(forms) <= set(choices.WEIGHT_FORMS), forms
    return click.option(
        "--weights",
        "form",
        type=click.Choice(["auto"] + list(forms)),
        default="auto",
        show_default=True,
        help=help_text,
    )


def verbosity_options(f):
    """``-q/--quiet`` and ``-v/--verbose`` on a command: the root's -q / -v, where a user types them last.

    Quiet: errors only (no progress bar, no per-epoch lines). Verbose: also what the tool does
    (-vv: debug). Given neither, the root command's setting stands.
    """

    @functools.wraps(f)
    def wrapper(*args, quiet=False, verbose=0, **kwargs):
        if quiet or verbose:
            from .log import configure

            configure(-1 if quiet else verbose)
        return f(*args, **kwargs)

    wrapper = click.option("-v", "--verbose", count=True, help="Also log what the tool does (-vv: debug).")(wrapper)
    return click.option("-q", "--quiet", is_flag=True, help="Errors only: no progress bar or per-epoch lines.")(wrapper)


ROUTING_OPTIONS = (  # (name, parameter, type, default when the bundle has no routing, help)
    ("--gate", "gate", float, routing.GATE, "topk: superclass confidence below which --k superclasses are tried."),
    ("--k", "topk", int, routing.K, "topk: superclasses tried below --gate."),
    ("--beta", "beta", float, routing.BETA, "topk: routes compete by p_super^beta x p_sub (1: equation 2)."),
)


def routing_options(f):
    """``--gate``, ``--k``, ``--beta`` of the topk policy; unset, the bundle's ``routing`` applies."""
    for name, param, kind, fallback, text in reversed(ROUTING_OPTIONS):
        shown = "the bundle's routing, else {:g}".format(fallback)
        f = click.option(name, param, type=kind, default=None, show_default=shown, help=text)(f)
    return f
