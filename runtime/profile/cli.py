"""``edgetool profile BUNDLE``: latency, throughput and memory reports, trtexec-style."""

from __future__ import annotations

import os

import click

from ..classifier import POLICIES
from ..errors import UsageError
from ..options import backend_option
from .engines import MODES


def _split(value: str, allowed, what: str):
    items = [v.strip() for v in value.split(",") if v.strip()]
    bad = [v for v in items if v not in allowed]
    if bad or not items:
        raise UsageError("--{} takes a comma-separated list of {}; got {!r}".format(what, ", ".join(allowed), value))
    return items


def _device_profile(name):
    if not name:
        return None
    from edgetool.runtime.device_profiles import load

    return load(name)["name"]


@click.command()
@click.argument("bundle", type=click.Path())
@click.argument("other", required=False, type=click.Path())
@backend_option
@click.option(
    "--device-profile",
    default=None,
    show_default="detected",
    help="Device profile this machine is (e.g. orin-nano); "
    "named in the report. Estimates for every other profile are always included.",
)
@click.option(
    "--out",
    default=None,
    type=click.Path(),
    show_default="BUNDLE-profile (A-vs-B-profile for two)",
    help="Report folder.",
)
@click.option("--iterations", default=20, show_default=True, help="Timed iterations per measurement.")
@click.option("--warmup", default=3, show_default=True, help="Untimed warm-up iterations.")
@click.option("--batch", default=8, show_default=True, help="Images per end-to-end and throughput batch.")
@click.option("--threads", default=0, show_default=True, help="ONNX Runtime intra-op threads (0 = its default).")
@click.option("--modes", default=",".join(MODES), show_default=True, help="Engine modes to measure (Super-Sub).")
@click.option(
    "--policies", default=",".join(POLICIES), show_default=True, help="Routing policies to measure (Super-Sub)."
)
@click.option(
    "--codecs", default="zstd,7z", show_default=True, help="Codecs to compare on the first delta (Super-Sub)."
)
@click.option(
    "--memory/--no-memory",
    default=True,
    show_default=True,
    help="Measure resident memory of single, efficient and vanilla (a fresh process each; flat: its one network).",
)
@click.option(
    "--plots",
    default="auto",
    show_default=True,
    type=click.Choice(["auto", "png", "svg"]),
    help="HTML plot format: PNG needs matplotlib (the train extra); SVG needs nothing.",
)
def profile(
    bundle, other, backend, device_profile, out, iterations, warmup, batch, threads, modes, policies, codecs, memory,
    plots,
):  # fmt: skip
    """Measure BUNDLE on this machine: switch stages, inference, end to end per routing policy and
    engine mode, throughput, memory against vanilla and the single network.  A flat bundle is one
    network: its inference, end to end, throughput and memory, nothing that switches.

    With OTHER, both are measured in one run and set side by side (latency, throughput, memory,
    storage; the labels they agree on where both carry the same samples).

    Writes profile.json, profile.md and profile.html (plots inline) into --out.
    """
    from ..bundle import codecs as codec_mod
    from .compare import comparison_lines, comparison_report, write_comparison
    from .report import write_reports

    if iterations < 1 or warmup < 0 or batch < 1 or threads < 0:
        raise UsageError("--iterations and --batch must be >= 1, --warmup and --threads >= 0")
    modes_l = _split(modes, MODES, "modes")
    policies_l = _split(policies, POLICIES, "policies")
    codecs_l = _split(codecs, sorted(codec_mod.CODECS), "codecs")
    if plots == "png":
        from ..errors import require

        require("matplotlib", "train")
    profile_name = _device_profile(device_profile)
    paths = [bundle] + ([other] if other else [])
    for p in paths:
        if not os.path.exists(p):
            raise UsageError("{}: no such bundle".format(p))
    out = out or _default_out(paths)
    from ..files import check_output

    check_output(out, "--out", folder=True)
    settings = dict(backend=backend, iterations=iterations, warmup=warmup, batch=batch, threads=threads)
    settings.update(modes=modes_l, policies=policies_l, codecs=codecs_l, memory=memory, device_profile=profile_name)
    reports = _run_all(paths, settings)
    if len(reports) == 1:
        written = write_reports(reports[0], out, plots)
        _echo_summary(reports[0], memory)
    else:
        both = comparison_report(*reports)
        written = write_comparison(both, out, plots)
        for tag, r in zip("AB", reports):
            click.echo("{}: {}".format(tag, r["bundle"]["path"]))
            _echo_summary(r, memory, "  ")
        click.echo("\n".join(comparison_lines(both["comparison"])))
    click.echo("wrote {}".format(", ".join(written[k] for k in ("json", "md", "html"))))


def _run_all(paths, settings: dict) -> list:
    """Each bundle's profile report, measured in turn under one progress bar."""
    from .profile import run_profile

    steps = sum(_steps(_kind(p), len(settings["modes"]), settings["memory"]) for p in paths)
    stream = click.get_text_stream("stderr")
    with click.progressbar(length=steps, label="profiling", file=stream, item_show_func=lambda s: s) as bar:
        return [run_profile(p, step=lambda name: bar.update(1, name), **settings) for p in paths]


def _default_out(paths) -> str:
    first = os.path.normpath(paths[0]).rstrip(os.sep)
    if len(paths) == 1:
        return first + "-profile"
    return "{}-vs-{}-profile".format(first, os.path.basename(os.path.normpath(paths[1]).rstrip(os.sep)))


def _kind(path: str) -> str:
    from ..cli import open_bundle

    with open_bundle(path) as b:
        return b.kind


def _steps(kind: str, modes: int, memory: bool) -> int:
    """The progress steps of one bundle's profile (:func:`.profile.run_profile` reports each)."""
    if kind == "flat":
        return 3 + (1 if memory else 0)
    return modes + 3 + (3 if memory else 0)


def _echo_summary(report, memory, indent=""):
    s = report["stages"]
    if report.get("model") == "flat":
        row = report["end_to_end"]["one-engine"]["flat"]
        lines = [
            "model: flat (one network over {} classes; no routing, no switch, no vanilla comparison)".format(
                report["bundle"]["classes"]
            ),
            "inference: median {:.3f} ms, p99 {:.3f} ms | end to end median {:.3f} ms/image, {:.1f} images/s".format(
                s["inference"]["median"], s["inference"]["p99"], row["per_image_ms"]["median"], row["images_per_s"]
            ),
        ]
        if memory:
            lines.append(
                "resident memory: {:.2f} MiB".format(report["memory"]["forms"]["single"]["resident_bytes"] / 2**20)
            )
    else:
        lines = [
            "switch to subclass: median {:.3f} ms, p99 {:.3f} ms | cold load median {:.2f} ms".format(
                s["switch_to_subclass"]["median"], s["switch_to_subclass"]["p99"], s["cold_load"]["median"]
            )
        ]
        if memory:
            r = report["ratios"]
            lines.append(
                "resident memory: efficient {:.2f}x, vanilla {:.2f}x the single network".format(
                    r["efficient_over_single"], r["vanilla_over_single"]
                )
            )
    for line in lines:
        click.echo(indent + line)
