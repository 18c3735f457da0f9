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
@backend_option
@click.option(
    "--device-profile",
    default=None,
    show_default="detected",
    help="Device profile this machine is (e.g. orin-nano); "
    "named in the report. Estimates for every other profile are always included.",
)
@click.option("--out", default=None, type=click.Path(), show_default="BUNDLE-profile", help="Report folder.")
@click.option("--iterations", default=20, show_default=True, help="Timed iterations per measurement.")
@click.option("--warmup", default=3, show_default=True, help="Untimed warm-up iterations.")
@click.option("--batch", default=8, show_default=True, help="Images per end-to-end and throughput batch.")
@click.option("--threads", default=0, show_default=True, help="ONNX Runtime intra-op threads (0 = its default).")
@click.option("--modes", default=",".join(MODES), show_default=True, help="Engine modes to measure.")
@click.option("--policies", default=",".join(POLICIES), show_default=True, help="Routing policies to measure.")
@click.option("--codecs", default="zstd,7z", show_default=True, help="Codecs to compare on the first delta.")
@click.option(
    "--memory/--no-memory",
    default=True,
    show_default=True,
    help="Measure resident memory of single, efficient and vanilla (one fresh process each).",
)
@click.option(
    "--plots",
    default="auto",
    show_default=True,
    type=click.Choice(["auto", "png", "svg"]),
    help="HTML plot format: PNG needs matplotlib (the train extra); SVG needs nothing.",
)
def profile(
    bundle, backend, device_profile, out, iterations, warmup, batch, threads, modes, policies, codecs, memory, plots
):
    """Measure BUNDLE on this machine: switch stages, inference, end to end per routing policy and
    engine mode, throughput, memory against vanilla and the single network.

    Writes profile.json, profile.md and profile.html (plots inline) into --out.
    """
    from ..bundle import codecs as codec_mod
    from .profile import run_profile
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
    if not os.path.exists(bundle):
        raise UsageError("{}: no such bundle".format(bundle))
    out = out or os.path.normpath(bundle).rstrip(os.sep) + "-profile"
    from ..files import check_output

    check_output(out, "--out", folder=True)
    steps = len(modes_l) + 3 + (3 if memory else 0)
    with click.progressbar(
        length=steps, label="profiling", file=click.get_text_stream("stderr"), item_show_func=lambda s: s
    ) as bar:

        def step(name):
            bar.update(1, name)

        report = run_profile(
            bundle,
            backend=backend,
            iterations=iterations,
            warmup=warmup,
            batch=batch,
            threads=threads,
            modes=modes_l,
            policies=policies_l,
            codecs=codecs_l,
            memory=memory,
            device_profile=profile_name,
            step=step,
        )
    paths = write_reports(report, out, plots)
    _echo_summary(report, paths, memory)


def _echo_summary(report, paths, memory):
    s = report["stages"]
    if report.get("model") == "flat":
        click.echo("model: flat (one network; classify runs it once per image and never switches)")
    click.echo(
        "switch to subclass: median {:.3f} ms, p99 {:.3f} ms | cold load median {:.2f} ms".format(
            s["switch_to_subclass"]["median"], s["switch_to_subclass"]["p99"], s["cold_load"]["median"]
        )
    )
    if memory:
        r = report["ratios"]
        click.echo(
            "resident memory: efficient {:.2f}x, vanilla {:.2f}x the single network".format(
                r["efficient_over_single"], r["vanilla_over_single"]
            )
        )
    click.echo("wrote {}".format(", ".join(paths[k] for k in ("json", "md", "html"))))
