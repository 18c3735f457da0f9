"""``edgetool export``: a bundle from a training run (the run writes it with :mod:`edgetool.export.bundle`)."""

from __future__ import annotations

import os

import click

from edgetool.runtime import commands
from edgetool.runtime.choices import DEFAULT_EXPORT_MODEL, EXPORT_MODELS
from edgetool.runtime.options import codec_option


@click.command()
@click.argument("run_dir", type=click.Path())
@click.option("--out", required=True, type=click.Path(), help="Bundle directory to write.")
@codec_option
@click.option("--archive", is_flag=True, help="Also write OUT.tar.gz, one file to ship.")
@click.option(
    "--sign",
    "sign_key",
    type=click.Path(dir_okay=False),
    default=None,
    show_default="unsigned",
    help="Sign the manifest with this Ed25519 private key (edgetool keygen); devices check it.",
)
@click.option("--force", is_flag=True, help="Replace --out even if it is a non-empty folder that is not a bundle.")
@click.option(
    "--model",
    type=click.Choice(EXPORT_MODELS),
    default=DEFAULT_EXPORT_MODEL,
    show_default=True,
    help="super-sub: the two-stage bundle. flat: the flat network trained for Super-Sub's image passes; "
    "flat-wide: the wider flat network at Super-Sub's FLOPs per image (each int8, a single-network bundle; "
    "trained here if `edgetool evaluate` has not trained it). `edgetool evaluate` says which to ship.",
)
@click.option(
    "--release",
    type=int,
    default=None,
    show_default="the export time in seconds since 1970",
    help="Release number in the signed manifest. Devices refuse a bundle whose release is lower than the "
    "highest they installed, unless deploy is given --allow-downgrade.",
)
@click.option(
    "--update-of",
    "update_of",
    default=None,
    type=click.Path(),
    show_default="none: a full bundle",
    help="Write an update bundle instead: the new weights as an exact int8 delta against this deployed "
    "bundle's base, and only the files whose bytes changed. Devices apply it in place of a full bundle; "
    "refused when the graph or the scales differ (train with --update-of to keep them).",
)
def export(run_dir, out, codec, archive, sign_key, force, model, release, update_of):
    """Write a bundle (base.onnx, int8 deltas, manifest) from the training run RUN_DIR.

    The bundle is written to a temporary sibling of OUT and renamed into place when complete;
    a previous bundle at OUT stays until then.  With --model flat or flat-wide the bundle holds
    one flat network; classify, camera, profile, doctor and deploy take it as they take any bundle.
    """
    from edgetool.export.atomic import check_out
    from edgetool.runtime.errors import UsageError

    check_out(out, force)
    if release is not None and release < 0:
        raise UsageError("--release must be >= 0, got {}".format(release))
    if sign_key:
        from edgetool.runtime.bundle.signature import load_private

        load_private(sign_key)  # a bad key fails before any work
    if update_of is not None:
        if archive:
            raise UsageError("--archive: an update bundle ships as a folder (deploy sends its few files)")
        m = export_update(run_dir, out, codec, model, release, update_of, force)
    elif _is_transfer(run_dir):
        m = _export_transfer(run_dir, out, codec, force, model, release)
    else:
        m = _export_super_sub(run_dir, out, codec, force, model, release)
    if "routing" in m:
        from edgetool.runtime.bundle import routing

        sizes = [len(s["subclasses"]) for s in m["hierarchy"]["superclasses"]]
        click.echo("routing: topk " + routing.parse(m["routing"], len(sizes), sizes).describe())
    if sign_key:
        from edgetool.runtime.bundle.signature import sign_bundle

        click.echo("signed: manifest.sig (key {})".format(sign_bundle(out, sign_key)["key_id"]))
    if archive:
        from edgetool.export.bundle import archive as make_archive

        path = make_archive(out, os.path.normpath(out) + ".tar.gz", force=force)
        click.echo("archive: {}".format(path))


def _is_transfer(run_dir: str) -> bool:
    """A run of a pretrained edge backbone (config.json names one)."""
    from .train.run_data import TrainConfig
    from .train.models import is_transfer

    path = os.path.join(run_dir, "config.json")
    return os.path.isfile(path) and is_transfer(TrainConfig.load(path))


def write_run_bundle(run_dir, out, codec, force, model, release) -> dict:
    """The run's bundle at *out* (a transfer run's flat network, or the Super-Sub networks or a
    flat control), after checking that the run holds what it needs; prints nothing."""
    if _is_transfer(run_dir):
        return _transfer_run(run_dir, model).export(out, codec, force=force, release=release)
    return _super_sub_run(run_dir, model).export(out, codec, force=force, model=model, release=release)


def _transfer_run(run_dir, model):
    from edgetool.runtime.errors import UsageError

    from .train.transfer import TransferRun

    if model not in (DEFAULT_EXPORT_MODEL, "flat"):
        raise UsageError(
            "{}: a pretrained-backbone run has one network; export it as it is (--model flat)".format(run_dir)
        )
    if not os.path.isfile(os.path.join(run_dir, "int8.pt")):
        raise UsageError("{}: missing int8.pt; run `{}` first".format(run_dir, commands.train(run_dir)))
    return TransferRun.load(run_dir)


def _export_transfer(run_dir, out, codec, force, model, release) -> dict:
    run = _transfer_run(run_dir, model)
    m = run.export(out, codec, force=force, release=release)
    click.echo(size_line(out, m, codec))
    trunk = "trunk frozen up to {}".format(run.split) if run.split else "trained whole"
    click.echo("model: flat (one network over {} classes; {} from {} weights, {})".format(
        len(m["model"]["classes"]), run.arch, run.cfg.pretrained or "no", trunk))  # fmt: skip
    return m


def _export_super_sub(run_dir, out, codec, force, model, release) -> dict:
    m = _super_sub_run(run_dir, model).export(out, codec, force=force, model=model, release=release)
    click.echo(size_line(out, m, codec))
    if model != "super-sub":
        click.echo("model: {} (one network over {} classes; no switch)".format(model, len(m["model"]["classes"])))
    return m


def _super_sub_run(run_dir, model):
    from edgetool.runtime.errors import UsageError

    from .train.run import Run

    for f in ("config.json", "super_qat.pt"):
        if not os.path.isfile(os.path.join(run_dir, f)):
            raise UsageError("{}: missing {}; run `{}` first".format(run_dir, f, commands.train(run_dir)))
    run = Run.open(run_dir, progress=model != "super-sub")  # a flat control may train here: show it
    missing = [
        os.path.join("qat", "{}.pt".format(k))
        for k in range(run.hier.n_super)
        if not os.path.isfile(run.file("qat", "{}.pt".format(k)))
    ]
    if missing and model == "super-sub":
        raise UsageError(
            "{}: missing {}; run `{}` first".format(run_dir, ", ".join(missing), commands.train(run_dir, "qat"))
        )
    return run


def size_line(out: str, manifest: dict, codec: str) -> str:
    """The bundle's size: every file in it, then the parts (base.onnx, deltas, manifest and samples)."""
    total = sum(os.path.getsize(os.path.join(d, f)) for d, _, files in os.walk(out) for f in files)
    base = manifest["base"]["size"]
    deltas = sum(d["stored_size"] for d in manifest["deltas"])
    return "bundle: {} ({} bytes in all: base.onnx {}, {} deltas {} ({}), manifest and samples {})".format(
        out, total, base, len(manifest["deltas"]), deltas, codec, total - base - deltas
    )


def export_update(run_dir, out, codec, model, release, deployed, force=False) -> dict:
    """``export RUN --update-of DEPLOYED``: the run's full bundle, written to a temporary folder, as an
    update bundle of *deployed* at *out* (:func:`edgetool.export.update.write_update`); prints what
    it ships and what the device reuses.  Returns the resulting bundle's manifest."""
    import tempfile

    from edgetool.export.update import write_update
    from edgetool.runtime.bundle import update as U
    from edgetool.runtime.errors import UsageError

    if not os.path.exists(deployed):
        raise UsageError("--update-of {}: no such bundle".format(deployed))
    if U.is_update(_json(os.path.join(deployed, "manifest.json"))):
        raise UsageError(
            "--update-of {}: an update bundle; give the full bundle of the network the devices run "
            "(export that run without --update-of)".format(deployed)
        )
    with tempfile.TemporaryDirectory(prefix="edgetool-update-") as tmp:
        full = os.path.join(tmp, "bundle")
        write_run_bundle(run_dir, full, codec, False, model, release)
        total = _folder_bytes(full)
        m = write_update(full, deployed, out, codec, force)
    shipped = _folder_bytes(out)
    click.echo("update: {} ({} bytes to ship, {:.1f}% of the full bundle's {})".format(
        out, shipped, 100.0 * shipped / max(total, 1), total))  # fmt: skip
    click.echo(update_lines(U.parse(m), deployed))
    return m["result"]


def update_lines(u, deployed: str) -> str:
    """What an update re-encodes and what it reuses, as export and inspect print it."""
    b = u.base_delta
    re_encoded = [e.file for e in u.shipped if e.file.startswith("deltas/")]
    other = [e.file for e in u.shipped if not e.file.startswith("deltas/")]
    return "\n".join([
        "applies to: base {} of {} (release {}); release {}".format(
            u.base_sha256[:12], deployed, "?" if u.base_release is None else u.base_release, u.release),
        "re-encoded: base.onnx as an exact delta {} ({} bytes, {}; {} tensor(s) changed); specialist deltas: {}".format(
            b.file, b.size, b.codec, len(u.changed), ", ".join(re_encoded) or "none"),
        "shipped as they are: {}; reused from the installed version: {}".format(
            ", ".join(other) or "nothing", ", ".join(u.reused) or "nothing"),
    ])  # fmt: skip


def _json(path: str):
    import json

    try:
        with open(path, "rb") as f:
            return json.loads(f.read(16 << 20))
    except (OSError, ValueError):
        return None


def _folder_bytes(folder: str) -> int:
    return sum(os.path.getsize(os.path.join(d, f)) for d, _, files in os.walk(folder) for f in files)
