"""Device-side commands (no torch): classify, inspect."""

from __future__ import annotations

import json
import os

import click

from .bundle import routing
from .bundle.manifest import backbone_line
from .errors import UsageError
from . import folder_eval as E
from .options import backend_option, check_top, engine_mode_option, policy_option, routing_options, top_option
from .options import verify_switch_option
from .preprocess import expand_images


def open_bundle(path):
    from .bundle.reader import Bundle

    return Bundle.open(path)


def make_backend(bundle, backend: str, verify_switch=None, **kw):
    """Backend *backend* on *bundle*; with *verify_switch* (a callable given one line per network), the
    first switch to each network is checked against ONNX Runtime on the bundle's samples."""
    from .backends import load_backend

    be = load_backend(backend, bundle, **kw)
    if verify_switch is None:
        return be
    from .backends.verify import verifying

    try:
        return verifying(be, bundle, verify_switch)
    except BaseException:
        be.close()
        raise


@click.command()
@click.argument("bundle", type=click.Path())
@click.argument("images", nargs=-1, required=True, type=click.Path())
@backend_option
@policy_option
@routing_options
@click.option("--batch", default=32, show_default=True, help="Images per batch.")
@click.option(
    "--json", "as_json", is_flag=True, help="Print one JSON object per image (the prediction is under 'class')."
)
@click.option(
    "--skip-errors",
    is_flag=True,
    help="Skip images that cannot be read, count them on stderr, and fail only if none could be read "
    "(default: the first unreadable image stops the run with one error line).",
)
@click.option(
    "--eval",
    "evaluate",
    is_flag=True,
    help="IMAGES is one labelled folder, FOLDER/<class>/<image>: print accuracy, superclass accuracy, a "
    "per-class table and the confusion matrix instead of one line per image (--json: one JSON object).",
)
@click.option(
    "--plot",
    type=click.Path(dir_okay=False),
    default=None,
    show_default="none",
    help="With --eval: the confusion matrix as a PNG.",
)
@top_option
@verify_switch_option
def classify(
    bundle, images, backend, policy, gate, topk, beta, batch, as_json, skip_errors, evaluate, plot, top, verify_switch
):
    """Classify IMAGES (files or folders) with BUNDLE: superclass, fine class, confidence.

    Folders are read in sorted order. Each image is routed on its own; for video or a folder
    of consecutive frames, `edgetool camera` runs the stream policies.  In the text table, control
    characters in names are shown escaped (a file name cannot add a line); --json is the exact form.
    """
    if batch < 1:
        raise UsageError("--batch must be >= 1")
    routing.check_options(gate, topk, beta)  # one error line before the bundle is read
    check_top(top)
    E.check_request(images, evaluate, plot)
    with open_bundle(bundle) as b:
        files = expand_images(images)
        report = (lambda line: click.echo(line, err=True)) if verify_switch else None
        with make_backend(b, backend, verify_switch=report) as be:
            show = None if evaluate else as_json
            done = _classify(b, be, files, policy, batch, (show, top), skip_errors, gate=gate, k=topk, beta=beta)
        if evaluate:
            click.echo(E.report(b, images[0], done, as_json, plot))


def _classify(b, be, files, policy, batch, shown, skip_errors=False, **settings) -> list:
    """Classify *files*; *shown* = (as_json, top): print a row (as_json: a JSON line) per image unless
    as_json is None, with the *top* most confident classes when top > 0.  Returns [(file, prediction)]
    of the images that could be read."""
    from .classifier import SuperSubClassifier
    from .preprocess import load_images

    as_json, top = shown
    clf = SuperSubClassifier(be, policy=policy, **settings)
    if b.kind == "flat" and policy == "topk":
        click.echo("routing: none (a flat bundle is one network; --policy topk has nothing to route)", err=True)
    elif policy == "topk":
        click.echo("routing: topk " + clf.routing.describe(), err=True)
    row = _row_format(b)
    if as_json is False:
        click.echo(row.format("superclass", "class", "confidence", "image", "  top {}".format(top) if top else ""))
    skipped: list = []
    done: list = []
    for i in range(0, len(files), batch):
        chunk, n = files[i : i + batch], len(skipped)
        x = load_images(chunk, b.input, skipped if skip_errors else None)
        bad = {p for p, _ in skipped[n:]}
        chunk = [f for f in chunk if f not in bad]
        preds = clf.classify(x) if x is not None else []
        done.extend(zip(chunk, preds))
        for f, p in zip(chunk, preds) if as_json is not None else ():
            click.echo(json.dumps(_record(f, p, top)) if as_json else row.format(*_cells(f, p, top)))
    if skipped:
        click.echo("skipped {} of {} images that could not be read; the first: {}".format(
            len(skipped), len(files), skipped[0][1]), err=True)  # fmt: skip
        if len(skipped) == len(files):
            raise UsageError("none of the {} images could be read".format(len(files)))
    return done


def _row_format(b) -> str:
    """The text table's row: superclass, class, confidence, image, then the top classes (with --topk)."""
    names = [s.name for s in b.superclasses] + ["superclass"]
    classes = [c for s in b.superclasses for c in s.subclasses] + ["class"]
    return "{{:<{}}}  {{:<{}}}  {{:>10}}  {{}}{{}}".format(max(map(len, names)), max(map(len, classes)))


def _record(f: str, p, top: int) -> dict:
    record = dict(image=f, **p.to_dict())
    if top:
        record["topk"] = p.top(top)
    return record


def _cells(f: str, p, top: int) -> tuple:
    from .bundle.names import escaped

    ranked = ", ".join("{} ({:.3f})".format(escaped(t["class"]), t["confidence"]) for t in p.top(top))
    shown = (escaped(p.superclass_name), escaped(p.label), "{:.3f}".format(p.confidence), escaped(f))
    return shown + (("  " + ranked) if top else "",)


@click.command("inspect")
@click.argument("bundle", type=click.Path())
def inspect_cmd(bundle):
    """Verify every file of BUNDLE (or of an update bundle) against its manifest and summarise it."""
    from .bundle.update import inspect_update, provenance

    lines = inspect_update(bundle)  # an update bundle: what it applies to, ships and reuses
    if lines is None:
        with open_bundle(bundle) as b:
            _summary(bundle, b)
        lines = provenance(bundle) + _leftovers(bundle)
    for line in lines:
        click.echo(line)


def _leftovers(bundle: str):
    """Notes on what a stopped export of *bundle* left beside it: its hidden temporaries whose
    process is gone (the next export to the same name removes them)."""
    from .bundle.names import escaped
    from .files import TMP_TAG

    folder, name = os.path.split(os.path.abspath(bundle))
    prefix = "." + name + TMP_TAG
    try:
        entries = sorted(os.listdir(folder))
    except OSError:
        return []
    notes = []
    for e in entries:
        owner = e[len(prefix) :].split("-", 1)[0] if e.startswith(prefix) else ""
        if owner.isdigit() and not _alive(int(owner)):
            notes.append(
                "leftover    {} (left by a stopped export, pid {}; the next export to {} removes it)".format(
                    escaped(os.path.join(folder, e)), owner, escaped(name)
                )
            )
    return notes


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True
    return True


def _summary(bundle, b):
    m = b.manifest
    sizes = b.stored_bytes()
    click.echo("bundle      {} (schema {}, toolchain {})".format(bundle, m["schema"], ascii(m.get("toolchain_version"))))  # noqa: E501  # fmt: skip
    click.echo("input       {} {}; {}".format(m["input"].get("layout", "NCHW"), list(b.model.input_shape), _resize(b)))
    sub = "super-sub: {} subclass networks as int8 deltas of base.onnx".format(len(b.superclasses))
    flat = "flat: one network over {} classes; ".format(b.head_width) + (
        "{} of {} superclasses have a specialist delta ({}), the others keep the base's answer".format(
            len(b.specialists), len(b.superclasses), ", ".join(ascii(b.superclasses[k].name)[1:-1] for k in b.specialists)  # noqa: E501
        ) if b.specialists else "the deltas are zero, nothing switches"
    )  # fmt: skip
    click.echo("model       " + ((flat.replace("flat:", "flat with specialists:", 1) if b.specialists else flat) if b.kind == "flat" else sub))  # noqa: E501  # fmt: skip
    click.echo(backbone_line(*(ascii(v)[1:-1] for v in b.model.backbone))) if b.model.backbone else None
    note = ' (a "not mine" row after each subclass\'s classes)' if b.not_mine else ""
    click.echo("head width  {}{}".format(b.head_width, note))
    changed = b.model.changed
    changed = "" if changed is None else "; {} changed by some delta (refit.changed)".format(len(changed))
    click.echo(
        "refit       {} tensors, {} bytes packed{}".format(len(b.layout.tensors), b.layout.total_nbytes, changed)
    )
    click.echo("base.onnx   {} bytes, sha256 {} (what updates name)".format(sizes["base"], b.model.base.sha256[:12]))
    for d in b.model.deltas:
        s = b.superclasses[d.index]
        base = "  (routes to the base)" if b.kind == "flat" and b.specialists and d.index not in b.specialists else ""
        click.echo(
            "delta       {:<12} {:>3} classes  {:<5} {:>9} bytes (raw {}){}".format(
                s.name, len(s.subclasses), d.codec, d.size, d.raw_size, base
            )
        )
    if b.kind != "flat":
        click.echo("routing     topk: " + (b.routing or routing.DEFAULT).describe())
        budget = b.model.delta_budget
        shown = "not recorded" if budget is None else "{} (--delta-budget {})".format(budget[0], budget[2])
        click.echo("budget      " + shown)
    click.echo("signature   " + _signature(b.root))
    click.echo("release     {}".format(b.model.release))
    click.echo("all files verified (sha256)")


def _resize(b) -> str:
    """How the input spec resizes an image, in words (input.resize and input.crop)."""
    from .preprocess import resize_mode

    _, h, w = b.model.input_shape
    mode, crop = resize_mode(b.input)
    if mode == "shorter":
        return "resize shorter: shorter side to {}, centre {}x{} (crop {:g})".format(int(round(h / crop)), w, h, crop)
    return "resize squash: straight to {}x{}".format(w, h)


def _signature(root: str) -> str:
    """Who signed the bundle (its key id), as its manifest.sig says; checking it is the device's job."""
    from .bundle.signature import SignatureError, signature_key_id

    try:
        kid = signature_key_id(root)
    except SignatureError:
        return "manifest.sig present but malformed"
    if kid is None:
        return "unsigned"
    return "manifest.sig, key {} (checked on the device against its trusted keys)".format(ascii(kid)[1:-1])


@click.command()
@click.argument("bundle", required=False, type=click.Path())
@click.option("--refits", default=20, show_default=True, help="Refits to time (trtexec --timeRefit style).")
@engine_mode_option
@click.option("--json", "as_json", is_flag=True, help="Print the checks as JSON.")
def doctor(bundle, refits, engine_mode, as_json):
    """Check this device: platform, GPU, CUDA kernel, and (with BUNDLE) TensorRT vs ONNX Runtime.

    Prints PASS / FAIL / SKIP per check; exits non-zero if any check fails.
    """
    from . import doctor as checks_mod
    from .errors import EdgetoolError

    def emit(c):
        if not as_json:
            click.echo("[{:<4}] {:<24} {}".format(c.status, c.name, c.detail))

    checks = checks_mod.run(bundle, refits=refits, emit=emit, engine_mode=engine_mode)
    if as_json:
        click.echo(json.dumps([c.to_dict() for c in checks], indent=1))
    failed = [c.name for c in checks if c.status == checks_mod.FAIL]
    skipped = [c.name for c in checks if c.status == checks_mod.SKIP]
    if not as_json:
        click.echo(
            "{} passed, {} failed, {} skipped{}".format(
                sum(c.status == checks_mod.PASS for c in checks),
                len(failed),
                len(skipped),
                " (could not run here: {})".format(", ".join(skipped)) if skipped else "",
            )
        )
    if failed:
        raise EdgetoolError("doctor: {} check(s) failed: {}".format(len(failed), ", ".join(failed)))
