"""Command-line options declared once, from the choice sets of :mod:`.choices`."""

from __future__ import annotations

import click

from . import choices

codec_option = click.option(
    "--codec",
    default=choices.DEFAULT_CODEC,
    show_default=True,
    type=click.Choice(list(choices.CODECS)),
    help="Delta codec (zstd: decodes ~50x faster than 7z for ~5% more bytes, see "
    "benchmarks/results/switch_latency.json; sparse: decodes faster on large networks with few changed "
    "codes, see benchmarks/results/performance.json).",
)

device_profile_option = click.option(
    "--device-profile",
    "profile_name",
    default=None,
    help="Device profile name or JSON file (default: detected Jetson, else desktop-gpu).",
)

backend_option = click.option(
    "--backend", default=choices.DEFAULT_BACKEND, show_default=True, type=click.Choice(list(choices.BACKENDS))
)

policy_option = click.option(
    "--policy",
    default=choices.DEFAULT_POLICY,
    show_default=True,
    type=click.Choice(list(choices.POLICIES)),
    help="Routing policy.",
)

engine_mode_option = click.option(
    "--engine-mode",
    default=choices.DEFAULT_ENGINE_MODE,
    show_default=True,
    type=click.Choice(list(choices.ENGINE_MODES)),
)


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
