"""The newcomer's --help, report and plots: every option shows its default; report.json is strict
JSON when the bounds tie and names the network of every figure and the bundle's size; the plots
zoom to the data. The run comes from tests/newcomer.py."""

import json
import os
import re

import numpy as np
import pytest

torch = pytest.importorskip("torch")
from newcomer import edgetool, newcomer_fixture  # noqa: E402, F401


# 5. defaults in --help ---------------------------------------------------------------------------
def _every_option(ctx, name, cmd):
    """(command path, option) for every option of *cmd* and its subcommands."""
    import click

    if isinstance(cmd, click.Group):
        for sub in cmd.list_commands(ctx):
            yield from _every_option(ctx, name + " " + sub, cmd.get_command(ctx, sub))
        return
    for p in cmd.params:
        if isinstance(p, click.Option):
            yield name, p


def _options_without_default(ctx, name, cmd):
    for path, p in _every_option(ctx, name, cmd):
        if not (p.is_flag or p.required or p.count or p.name == "help") and not p.show_default:
            yield "{} {}".format(path, p.opts[0])


def test_every_option_shows_its_default():
    import click

    from edgetool.cli import COMMANDS, cli

    ctx = click.Context(cli)
    missing = [m for n in sorted(COMMANDS) for m in _options_without_default(ctx, n, cli.get_command(ctx, n))]
    assert missing == []
    text = edgetool("train", "--help").stdout
    for flag, default in (("--epochs", 8), ("--ft-epochs", 10), ("--qat-epochs", 2), ("--batch", 128)):
        assert re.search(re.escape(flag) + r" INTEGER[^[]*\[default:\s+{}\]".format(default), text), flag
    assert re.search(r"--lr FLOAT[^[]*\[default:\s+0\.003\]", text)
    assert "upper bound" in text.split("--ft-epochs")[1].split("--ft-lr")[0]  # the oracle's epochs
    val = " ".join(text.split("--val-fraction")[1].split("\n  -")[0].split())  # every choice it drives
    for drives in ("export's routing", "--adaptive", "flat control", "hierarchy learn"):
        assert drives in val, val


def test_every_option_has_help():
    import click

    from edgetool.cli import COMMANDS, cli

    ctx = click.Context(cli)
    every = [o for n in sorted(COMMANDS) for o in _every_option(ctx, n, cli.get_command(ctx, n))]
    assert len(every) > 100 and [(path, p.opts[0]) for path, p in every if not p.hidden and not p.help] == []


# 7. strict JSON, stated networks and bundle size -------------------------------------------------
def test_report_json_is_strict_when_the_bounds_tie(newcomer, tmp_path, monkeypatch):
    from edgetool.toolchain.evaluate import bounds, report as evaluate
    from edgetool.toolchain.evaluate.cli import summary_line
    from edgetool.toolchain.train.run import Run
    from edgetool.toolchain.evaluate.metrics import gap_closed

    real = bounds.measure

    def tied(run, bundle_dir, manifest=None):
        m = real(run, bundle_dir, manifest)
        m["correct"]["upper"] = m["correct"]["lower"].copy()
        m["accuracy"]["upper"] = m["accuracy"]["lower"]
        m["gap_closed"] = {k: gap_closed(m["accuracy"][k], *[m["accuracy"]["lower"]] * 2) for k in m["gap_closed"]}
        return m

    monkeypatch.setattr(evaluate.bounds, "measure", tied)
    run = Run.open(newcomer["run"], progress=False)
    rep = evaluate.evaluate(run, newcomer["bundle"], str(tmp_path))
    text = (tmp_path / "report.json").read_text()
    strict = json.loads(text, parse_constant=lambda c: pytest.fail("non-strict JSON constant " + c))
    assert "NaN" not in text and strict["gap_closed"]["vanilla"] == {
        "value": None,
        "reason": rep["gap_closed"]["vanilla"]["reason"],
    }
    assert "does not exceed" in strict["gap_closed"]["vanilla"]["reason"]
    line = summary_line(strict)
    assert "nan" not in line and "gap closed n/a" in line and "gap closed is undefined: the upper bound" in line
    md = (tmp_path / "report.md").read_text()
    assert "n/a (the upper bound" in md and "nan" not in md
    # every figure names its network, and the report gives the bundle's size (every file)
    files = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(newcomer["bundle"]) for f in fs)
    assert strict["bundle_bytes"]["files"] == files and "bundle {} bytes".format(files) in line
    assert set(strict["networks"]) >= {"lower", "control", "upper", "vanilla", "efficient", "confusion"}
    assert strict["confusion_network"].startswith("superclass (base) network")
    assert "Networks: lower: flat network" in md and "Bundle: {} bytes in all".format(files) in md
    assert strict["augmentation"]["augment"] == "none" and strict["input"]["shape"] == [1, 12, 12]
    assert "Training augmentation: none" in md and "Input: 1x12x12 (detected" in md


def test_an_empty_superclass_is_null_not_nan():
    from edgetool.toolchain.evaluate.metrics import per_group_accuracy

    acc = per_group_accuracy([True, False, True], [0, 0, 2], 3)
    assert acc == [0.5, None, 1.0]
    json.dumps(acc, allow_nan=False)


# 8. plots that zoom to the data ------------------------------------------------------------------
def _figures(monkeypatch, tmp_path, rep):
    from edgetool.toolchain.evaluate import report as evaluate

    figs = {}
    monkeypatch.setattr(evaluate, "_save", lambda fig, out, name: figs.setdefault(name, fig) and name)
    evaluate.make_plots(rep, str(tmp_path))
    return figs


def _plot_rep():
    names = ["tops", "feet", "misc"]
    hist = np.zeros(256, dtype=np.int64)
    hist[128] = 5000  # delta 0
    hist[127], hist[129], hist[131] = 300, 280, 2  # -1, +1, +3
    return {
        "superclasses": names,
        "confusion_percent": [[98, 1, 1], [0, 100, 0], [2, 0, 98]],
        "per_superclass_accuracy": {
            "lower": [0.96, 0.98, None],
            "control": [0.97, 0.99, 1.0],
            "upper": [0.99, 1.0, 1.0],
            "vanilla": [0.98, 0.99, 1.0],
            "efficient": [0.98, 0.985, 1.0],
        },
        "deltas": {n: {"histogram": hist.tolist(), "changed_fraction": 0.1} for n in names},
        "compression": {n: {"fp16_7z_no_qat": 0.5, "bundle_x": 0.3} for n in names},
        "codec": "zstd",
    }


def test_per_superclass_plot_zooms_and_its_legend_covers_no_bar(monkeypatch, tmp_path):
    figs = _figures(monkeypatch, tmp_path, _plot_rep())
    fig = figs["per_superclass.png"]
    ax = fig.axes[0]
    lo, hi = ax.get_ylim()
    assert 92 <= lo <= 93.5 and hi == 100  # 96-100% fills the axis, not 0-100
    fig.canvas.draw()
    legend = ax.get_legend().get_window_extent()
    bars = [p.get_window_extent() for p in ax.patches if p.get_height() == p.get_height()]
    assert bars and not any(legend.overlaps(b) for b in bars)


def test_delta_histogram_draws_only_counts_and_zooms_to_the_deltas(monkeypatch, tmp_path):
    figs = _figures(monkeypatch, tmp_path, _plot_rep())
    for ax in figs["delta_histograms.png"].axes:
        heights = sorted(p.get_height() for p in ax.patches)
        assert heights == [2, 280, 300, 5000]  # no empty bins drawn on the log axis
        assert ax.get_yscale() == "log" and ax.get_xlim() == (-4, 4)  # not a fixed +-40
