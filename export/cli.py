"""``edgetool export``: a bundle from a training run."""
from __future__ import annotations

import os

import click


@click.command()
@click.argument("run_dir", type=click.Path())
@click.option("--out", required=True, type=click.Path(), help="Bundle directory to write.")
@click.option("--codec", default="zstd", show_default=True, type=click.Choice(["zstd", "7z", "sparse"]),
              help="Delta codec (zstd: decodes ~50x faster than 7z for ~5% more bytes, see "
                   "benchmarks/results/switch_latency.json; sparse: decodes faster on large networks with few changed codes).")
@click.option("--archive", is_flag=True, help="Also write OUT.tar.gz, one file to ship.")
def export(run_dir, out, codec, archive):
    """Write a bundle (base.onnx, int8 deltas, manifest) from the training run RUN_DIR."""
    from edgetool.runtime.errors import UsageError
    from edgetool.toolchain.pipeline import Run

    for f in ("config.json", "super_qat.pt"):
        if not os.path.isfile(os.path.join(run_dir, f)):
            raise UsageError("{}: missing {}; run `edgetool train {}` first".format(run_dir, f, run_dir))
    run = Run(run_dir, progress=False)
    m = run.export(out, codec)
    base = m["base"]["size"]
    total = base + sum(d["stored_size"] for d in m["deltas"])
    click.echo("bundle: {} ({} bytes: base.onnx {} + {} deltas, {})".format(out, total, base, len(m["deltas"]), codec))
    if archive:
        from .bundle import archive as make_archive

        path = make_archive(out, os.path.normpath(out) + ".tar.gz")
        click.echo("archive: {}".format(path))
