"""``edgetool demo``: the whole spine on the shipped sample, with one results table."""

from __future__ import annotations

import json
import os
import time

import click

from edgetool.runtime import commands
from edgetool.runtime.machine import machine_name

from .evaluate import bounds, verdict
from .train.device import describe
from .train.run import Run, TrainConfig
from .evaluate.runtime_eval import evaluate_bundle


# The shipped sample's training images the demo trains on (of 6,000, stratified): every network and both flat
# controls at the default settings in about four minutes on 2 cores; --limit-train 0 trains on all (twice as long).
SAMPLE_TRAIN_IMAGES = 3000


def demo_config(cfg: TrainConfig, keep: bool = False) -> TrainConfig:
    """*cfg* with the demo's own default: on the shipped sample, :data:`SAMPLE_TRAIN_IMAGES` training
    images, unless *keep* (--limit-train or a config file was given)."""
    if cfg.data == "sample" and not keep:
        cfg.limit_train = SAMPLE_TRAIN_IMAGES
    return cfg


def fmt_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return "{:.1f} {}".format(n, unit) if unit != "B" else "{} B".format(int(n))
        n /= 1024.0
    return str(n)


def fp32_bytes(model) -> int:
    return int(sum(p.numel() * 4 for p in model.state_dict().values() if p.dtype.is_floating_point))


def _train_every_network(run: Run, cfg: TrainConfig, stage):
    """Every network of the paper, in order; returns the flat and the superclass network."""
    stage("training the flat network (lower bound)")
    flat = run.flat()
    stage(
        "training the superclass (base) network from the flat network's trunk"
        if cfg.base_init == "flat"
        else "training the superclass (base) network from scratch"
    )
    sup = run.superclass()
    for k, s in enumerate(run.hier.superclasses):
        stage("fine-tuning vanilla fp32 subclass network [{}]".format(s))
        run.vanilla(k)
    stage("QAT of the superclass network (per-channel int8 weights, int8 activations)")
    run.super_qat()
    for k, s in enumerate(run.hier.superclasses):
        stage("QAT fine-tune of subclass network [{}] (scales frozen, delta budget {})".format(s, cfg.delta_budget))
        run.sub_qat(k)
    stage(
        "training the flat controls for Super-Sub's budget ({} epochs): equal budget; equal cost (width x{:g})".format(
            bounds.equal_budget_epochs(run), bounds.equal_cost_width(run)
        )
    )
    for kind in verdict.KINDS:
        run.flat_control(kind)
    return flat, sup


def onnx_bytes(run: Run, net) -> int:
    """Bytes of an int8 network's base.onnx, as a flat bundle stores it."""
    from edgetool.export.onnx_export import from_qatnet

    head = len(run.train.classes)
    return len(from_qatnet(net, run.input_spec["shape"], head, refit_inputs=True).SerializeToString())


def storage_bytes(manifest: dict, N: int, sup, flat) -> dict:
    """The bundle's stored bytes against N + 1 int8 or fp32 networks and the flat network."""
    base_size = manifest["base"]["size"]
    delta_sizes = [d["stored_size"] for d in manifest["deltas"]]
    fp32 = fp32_bytes(sup)
    return {
        "bundle": base_size + sum(delta_sizes),
        "base_onnx": base_size,
        "deltas": delta_sizes,
        "n_plus_1_int8": (N + 1) * base_size,
        "one_plus_0.2N_int8": int(round((1 + 0.2 * N) * base_size)),
        "n_plus_1_fp32": (N + 1) * fp32,
        "flat_fp32": fp32_bytes(flat),
    }


def _announce(cfg: TrainConfig, hier, out: str) -> None:
    click.echo(
        "edgetool demo: Super-Sub on {} ({} superclasses: {}), output in {}; training on {}".format(
            "the shipped Fashion-MNIST sample" if cfg.data == "sample" else cfg.data,
            hier.n_super,
            ", ".join(hier.superclasses),
            out,
            describe(),
        ),
        err=True,
    )


def run_demo(out: str, cfg: TrainConfig, codec: str = "zstd") -> dict:
    t0 = time.perf_counter()
    os.makedirs(out, exist_ok=True)
    run = Run.open(os.path.join(out, "run"), cfg)
    hier = run.hier
    _announce(cfg, hier, out)
    N = hier.n_super
    steps = 2 * N + 6  # flat, superclass, N vanilla, QAT superclass, N QAT, controls, export, measure
    done = [0]

    def stage(msg):
        done[0] += 1
        click.echo("[{}/{}] {}".format(done[0], steps, msg), err=True)

    t_train = time.perf_counter()
    flat, sup = _train_every_network(run, cfg, stage)
    t_train = time.perf_counter() - t_train
    stage("exporting the bundle ({} deltas)".format(codec))
    bundle_dir = os.path.join(out, "bundle")
    manifest = run.export(bundle_dir, codec)
    stage("measuring: bounds, control, vanilla, and the efficient int8 Super-Sub through the runtime (ONNX Runtime)")
    m = bounds.measure(run, bundle_dir, manifest)
    y = run.yte.numpy()
    rt = evaluate_bundle(bundle_dir, run.xte.numpy(), run.sup_of[y], run.loc_of[y])

    results = {
        "dataset": "fashion-mnist sample" if cfg.data == "sample" else cfg.data,
        "machine": machine_name(),
        "config": dict(cfg.__dict__),
        "superclasses": hier.superclasses,
        "test_images": int(len(y)),
        "accuracy": m["accuracy"],
        "gap_closed": m["gap_closed"],
        "verdict": m["verdict"],
        "cost": m["cost"],
        "train_images": int(len(run.ytr)),
        "routing": m["routing"],
        "x": m["x"],
        "storage_bytes": dict(
            storage_bytes(manifest, N, sup, flat),
            **{"flat_" + k + "_int8": onnx_bytes(run, run.flat_control(k)) for k in verdict.KINDS},
        ),
        "switch_latency_ms": rt["per_image"]["switch_ms"],
        "runtime": rt,
        "bundle": os.path.abspath(bundle_dir),
        "wall_seconds": time.perf_counter() - t0,
        "train_seconds": run.train_seconds(),  # each stage when it was trained (a control's QAT includes its float)
        "training_seconds": t_train,  # this run's training, stages resumed from checkpoints not counted
        "trained_on": describe(),
    }
    with open(os.path.join(out, "results.json"), "w") as f:
        json.dump(results, f, indent=1, allow_nan=False)
    print_table(results, N)
    return results


def table_rows(r: dict, N: int) -> list:
    """(key, name, storage, note) of every row of the demo table."""
    s = r["storage_bytes"]
    x = r["x"]["mean"]
    return [
        ("lower", "flat fp32 (lower bound)", fmt_bytes(s["flat_fp32"]), "1 network, all classes"),
        ("control", "control: flat, true super", fmt_bytes(s["flat_fp32"]), "flat net told the superclass"),
        (
            "upper",
            "upper bound (true super)",
            fmt_bytes(s["n_plus_1_fp32"]),
            "vanilla subclass nets told the superclass",
        ),
        ("vanilla", "vanilla fp32 Super-Sub", fmt_bytes(s["n_plus_1_fp32"]), "{} networks".format(N + 1)),
        ("efficient", "efficient int8 Super-Sub", fmt_bytes(s["bundle"]), "bundle via runtime: 1 + {:.3f}N".format(x)),
        ("flat_budget", "flat int8, equal budget", fmt_bytes(s["flat_budget_int8"]), "Super-Sub's image passes"),
        ("flat_wide", "flat int8, equal cost", fmt_bytes(s["flat_wide_int8"]), "wider: Super-Sub's FLOPs"),
    ]


def where_it_sits(a: dict, g: dict) -> str:
    """Where efficient int8 Super-Sub sits between the bounds, in one plain sentence."""
    eff, lo, van = a["efficient"], a["lower"], a["vanilla"]
    gap = g["efficient"]["value"]
    where = "n/a (the bounds tie)" if gap is None else "{:.0%} of the way from the lower to the upper bound".format(gap)
    side = "above" if eff > lo else ("level with" if eff == lo else "BELOW")
    return (
        "efficient int8 Super-Sub is {:+.2f} points {} the flat network (lower bound), {:+.2f} points from "
        "vanilla fp32 Super-Sub, {}."
    ).format(100 * (eff - lo), side, 100 * (eff - van), where)


def print_table(r: dict, N: int) -> None:
    a, s, x = r["accuracy"], r["storage_bytes"], r["x"]["mean"]
    rows = table_rows(r, N)
    cost, n = r["cost"], r["train_images"]
    click.echo("")
    head = "{:<26} {:>9}  {:>10}  {:>6}  {:>6}  {}"
    click.echo(head.format("model", "accuracy", "storage", "epochs", "MFLOPs", "note"))
    click.echo("-" * 104)
    for key, name, size, note in rows:
        c = cost[key]
        click.echo(
            "{:<26} {:>8.2f}%  {:>10}  {:>6.1f}  {:>6.1f}  {}".format(
                name, 100 * a[key], size, c["image_passes"] / n, c["flops_per_image"] / 1e6, note
            )
        )
    click.echo("-" * 104)
    click.echo("epochs: training image passes / training images; MFLOPs: per image, one superclass + one subclass")
    click.echo(where_it_sits(a, r["gap_closed"]))
    click.echo("verdict: " + r["verdict"]["message"])
    rt = r["routing"]
    click.echo(
        "routing: base network int8 {:.2%} (fp32 {:.2%}); the flat network's implied superclass {:.2%}".format(
            rt["base_int8"], rt["base_fp32"], rt["flat"]
        )
    )
    click.echo(
        "storage: bundle {} vs N+1 int8 networks {} ({:.1f}x smaller); x = stored delta / base.onnx under the "
        "same codec = {:.3f} (over the raw base.onnx: {:.3f}; paper: 0.2); delta budget {}".format(
            fmt_bytes(s["bundle"]),
            fmt_bytes(s["n_plus_1_int8"]),
            s["n_plus_1_int8"] / s["bundle"],
            r["x"]["same_codec"]["mean"],
            x,
            r["config"]["delta_budget"],
        )
    )
    sw = r["switch_latency_ms"]
    click.echo(
        "switch latency (decode + apply, ONNX Runtime CPU, {} switches): median {:.3f} ms, p90 {:.3f} ms".format(
            sw.get("count", 0), sw.get("median", float("nan")), sw.get("p90", float("nan"))
        )
    )
    click.echo(
        "machine: {}; trained on {}; {} test images; this run {:.0f} s, of which training {:.0f} s".format(
            r["machine"], r["trained_on"], r["test_images"], r["wall_seconds"], r["training_seconds"]
        )
    )
    click.echo("")
    click.echo("bundle:  {}".format(r["bundle"]))
    click.echo("results: {}".format(os.path.join(os.path.dirname(r["bundle"]), "results.json")))
    shown = commands.data_sample_images("try/")
    click.echo("try:     {}    (3 test images of each class as PNGs; --per-class all: the test split)".format(shown))
    click.echo("         {}".format(commands.classify("try/", r["bundle"])))
