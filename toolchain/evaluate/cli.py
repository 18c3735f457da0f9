"""``edgetool evaluate``: the report of a training run, and the one line it prints."""

from __future__ import annotations

import os

import click

from edgetool.runtime.errors import UsageError
from edgetool.runtime.options import verbosity_options

from ..cli import device_option


@click.command()
@click.argument("run_dir", type=click.Path())
@click.option(
    "--bundle",
    default=None,
    type=click.Path(),
    show_default="export one to a temporary folder",
    help="Measure the efficient Super-Sub through the runtime on this bundle.",
)
@click.option("--out", default=None, type=click.Path(), show_default="RUN_DIR/report", help="Report folder.")
@click.option(
    "--adaptive",
    is_flag=False,
    flag_value="base-ft,flat-ft,flat",
    default=None,
    show_default="off; alone: base-ft,flat-ft,flat",
    help="Also choose each cluster's vanilla network among these configurations by validation accuracy "
    "(Algorithm 2; needs --val-fraction): base-ft, flat-ft (fine-tuned from the flat network), flat.",
)
@device_option
@verbosity_options
def evaluate(run_dir, bundle, out, adaptive):
    """Report (Markdown, HTML, JSON, PNG plots): bounds, control, vanilla vs efficient, routing, deltas, storage x,
    and the verdict against two flat int8 controls (equal training budget, equal inference cost).

    A pretrained-backbone run (--pretrained): the bundle's int8 accuracy on the test photos through the
    runtime, each specialist's keep-base decision, and what the shipped ones add over their base
    (report.json, report.md)."""
    from .adaptive import CANDIDATES
    from .report import evaluate as run_eval
    from ..train.run import Run

    if not os.path.isfile(os.path.join(run_dir, "config.json")):
        raise UsageError("{}: not a training run (no config.json); run `edgetool train` first".format(run_dir))
    out = out or os.path.join(run_dir, "report")
    if _is_transfer(run_dir):
        from .transfer_report import evaluate_transfer, summary_line as transfer_line

        if adaptive is not None:
            raise UsageError("--adaptive chooses among Super-Sub's subclass networks; {} is a pretrained-backbone run "
                             "(evaluate it without --adaptive)".format(run_dir))  # fmt: skip
        rep = evaluate_transfer(run_dir, bundle, out)
        click.echo(transfer_line(rep))
        click.echo("report: {}".format(os.path.join(out, "report.md")))
        return
    cands = [c.strip() for c in adaptive.split(",") if c.strip()] if adaptive is not None else []
    bad = [c for c in cands if c not in CANDIDATES]
    if bad or (adaptive is not None and not cands):
        raise UsageError(
            "--adaptive: {} is not a network configuration; choose from {}".format(
                ascii(bad[0] if bad else adaptive)[:40], ", ".join(CANDIDATES)
            )
        )
    run = Run.open(run_dir, progress=True)
    if cands and run.data.val is None:
        raise UsageError("{}: --adaptive needs a validation split; train the run with --val-fraction".format(run_dir))
    rep = run_eval(run, bundle, out, cands)
    click.echo(summary_line(rep))
    click.echo("report: {}".format(os.path.join(out, "report.html")))


def _is_transfer(run_dir: str) -> bool:
    from ..train.run_data import TrainConfig
    from ..train.transfer import is_transfer

    return is_transfer(TrainConfig.load(os.path.join(run_dir, "config.json")))


def summary_line(rep: dict) -> str:
    a, g = rep["accuracy"], rep["gap_closed"]

    def gap(key):
        v = g[key]["value"]
        return "n/a" if v is None else "{:.0%}".format(v)

    line = (
        "lower {:.2%}  control {:.2%}  upper {:.2%}  vanilla {:.2%} (gap closed {})  "
        "efficient {:.2%} (gap closed {}), x = {:.3f}, bundle {} bytes"
    ).format(
        a["lower"],
        a["control"],
        a["upper"],
        a["vanilla"],
        gap("vanilla"),
        a["efficient"],
        gap("efficient"),
        rep["x"]["mean"],
        rep["bundle_bytes"]["files"],
    )
    line += "\nflat int8 controls: equal budget {:.2%}, equal cost {:.2%}".format(a["flat_budget"], a["flat_wide"])
    line += "\nverdict: " + rep["verdict"]["message"]
    ad = rep.get("adaptive")
    if ad:
        chosen = ", ".join("{} {}".format(k, v) for k, v in ad["choice"].items())
        line += "\nadaptive (Algorithm 2) {:.2%}: {}".format(ad["top1_accuracy"], chosen)
    if g["vanilla"]["value"] is None:
        line += "\ngap closed is undefined: {}".format(g["vanilla"]["reason"])
    return line
