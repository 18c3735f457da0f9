"""``edgetool evaluate`` of a pretrained-backbone run: the bundle's int8 accuracy on the test photos
through the runtime, the keep-base decision of each specialist, and what the shipped specialists
add over their own base, paired over the same photos.

Nothing here trains: the flat controls of this regime (a flat network trained for the specialists'
extra epochs; one at the two-stage inference cost) are ``benchmarks/pretrained_verdict.py``'s.
"""

from __future__ import annotations

import json
import os
import tempfile
from typing import Dict, List, Optional

import numpy as np

from edgetool.runtime import commands
from edgetool.runtime.errors import UsageError
from edgetool.runtime.files import write_json_atomic

from .verdict import paired_interval

BATCH = 32  # photos per runtime call


def evaluate_transfer(run_dir: str, bundle_dir: Optional[str], out_dir: str, progress: bool = True) -> dict:
    """Measure the finished transfer run at *run_dir* (its bundle exported to a temporary folder
    when *bundle_dir* is None); write report.json and report.md into *out_dir*."""
    from ..train.transfer import TransferRun

    run = TransferRun.load(run_dir, progress)
    if not os.path.isfile(run.file("int8.pt")) or not os.path.isfile(run.file("metrics.json")):
        raise UsageError(
            "{}: the run has not finished (no int8 network); run `{}` again".format(run_dir, commands.train(run_dir))
        )
    if bundle_dir is None:
        with tempfile.TemporaryDirectory(prefix="edgetool-eval-") as tmp:
            path = os.path.join(tmp, "bundle")
            run.export(path)
            return evaluate_transfer(run_dir, path, out_dir, progress)
    with open(run.file("metrics.json")) as f:
        metrics = json.load(f)
    decisions = None
    if os.path.isfile(run.file("specialists.json")):
        with open(run.file("specialists.json")) as f:
            decisions = json.load(f)
    labels = [run.classes[i] for i in run.test.labels]
    measured = measure(bundle_dir, run.test.paths, labels, list(run.classes))
    rep = report(run, metrics, decisions, measured)
    os.makedirs(out_dir, exist_ok=True)
    write_json_atomic(os.path.join(out_dir, "report.json"), rep)
    with open(os.path.join(out_dir, "report.md"), "w") as f:
        f.write(markdown(rep))
    return rep


def measure(bundle_dir: str, paths: List[str], labels: List[str], classes: List[str]) -> dict:
    """Right or wrong per test photo through ONNX Runtime: the bundle as shipped, and (where it
    ships specialists) its base network alone, on the same photos."""
    from edgetool.runtime.backends import load_backend
    from edgetool.runtime.bundle.reader import Bundle
    from edgetool.runtime.classifier import SuperSubClassifier
    from edgetool.runtime.preprocess import load_images

    with Bundle.open(bundle_dir) as b:
        if b.kind != "flat" or list(b.model.flat_classes or ()) != classes:
            raise UsageError("{}: not this run's bundle (other classes); export the run, or leave out --bundle".format(
                bundle_dir))  # fmt: skip
        be = load_backend("onnxruntime", b)
        shipped = [b.superclasses[k].name for k in b.specialists]
        clfs = {"bundle": SuperSubClassifier(be)}
        if shipped:
            clfs["base"] = SuperSubClassifier(be, specialists=False)
        right: Dict[str, List[bool]] = {name: [] for name in clfs}
        for i in range(0, len(paths), BATCH):
            x = load_images(paths[i : i + BATCH], b.input)
            for name, clf in clfs.items():
                right[name] += [p.label == y for p, y in zip(clf.classify(x), labels[i : i + BATCH])]
        rerun = clfs["bundle"].passes
    out = {k: np.asarray(v, bool) for k, v in right.items()}
    out.setdefault("base", out["bundle"])
    return {"correct": out, "shipped": shipped, "rerun": int(rerun)}


def report(run, metrics: dict, decisions: Optional[dict], measured: dict) -> dict:
    ok, base = measured["correct"]["bundle"], measured["correct"]["base"]
    shipped = measured["shipped"]
    diff, lo, hi = paired_interval([ok], [base]) if shipped else (0.0, 0.0, 0.0)
    trained = sorted(decisions["superclasses"]) if decisions else []
    if not trained:
        message = "a flat network ({} classes): nothing to route; int8 {:.2%} on the test photos".format(
            len(run.classes), ok.mean()
        )
    elif not shipped:
        message = (
            "no specialist beat the base on held-out validation photos (keep-base): the bundle classifies "
            "exactly as the flat network, int8 {:.2%} on the test photos; ship it as is".format(ok.mean())
        )
    else:
        message = (
            "{} of {} specialists shipped: {:+.2f} points over their own base on the test photos (95% CI "
            "[{:+.2f}, {:+.2f}]); the flat network trained for as many epochs as the specialists' is the "
            "fair control (benchmarks/pretrained_verdict.py)".format(
                len(shipped), len(trained), 100 * diff, 100 * lo, 100 * hi
            )
        )
    return {
        "kind": "transfer",
        "arch": run.arch,
        "image_size": run.size,
        "classes": len(run.classes),
        "test_images": int(len(ok)),
        "accuracy": {
            "int8_runtime": float(ok.mean()),
            "base_int8_runtime": float(base.mean()),
            "fp32": metrics["fp32"].get("test"),
            "fp32_validation": metrics["fp32"].get("validation"),
        },
        "specialists": {
            "trained": trained,
            "shipped": shipped,
            "images_rerun_by_a_specialist": measured["rerun"],
            "decisions": decisions["superclasses"] if decisions else {},
            "rule": decisions.get("rule") if decisions else None,
        },
        "paired_difference": {"points": 100 * diff, "ci95": [100 * lo, 100 * hi]},
        "verdict": {"message": message},
    }


def markdown(rep: dict) -> str:
    a, s = rep["accuracy"], rep["specialists"]
    fp32 = "" if a["fp32"] is None else " (fp32 {:.2%})".format(a["fp32"])
    lines = [
        "# {} at {} px, {} classes".format(rep["arch"], rep["image_size"], rep["classes"]),
        "",
        "int8 through ONNX Runtime on {} test photos: **{:.2%}**{}.".format(
            rep["test_images"], a["int8_runtime"], fp32
        ),
    ]
    if s["decisions"]:
        lines += [
            "",
            "| superclass | validation photos | base | specialist | wins | losses | p | shipped |",
            "|---|---:|---:|---:|---:|---:|---:|---|",
        ]
        for name, d in sorted(s["decisions"].items()):
            lines.append(
                "| {} | {} | {:.2%} | {:.2%} | {} | {} | {:.3g} | {} |".format(
                    name, d["images"], d["base"], d["specialist"], d["wins"], d["losses"], d["p"],
                    "yes" if d["ship"] else "no",
                )
            )  # fmt: skip
    lines += ["", "Verdict: " + rep["verdict"]["message"] + "."]
    return "\n".join(lines) + "\n"


def summary_line(rep: dict) -> str:
    return "verdict: " + rep["verdict"]["message"]
