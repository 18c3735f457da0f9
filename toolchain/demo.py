"""``edgetool demo``: the whole spine on the shipped sample, with one results table."""
from __future__ import annotations

import json
import os
import time

import click

from .pipeline import Run, TrainConfig
from .runtime_eval import evaluate_bundle


def fmt_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return "{:.1f} {}".format(n, unit) if unit != "B" else "{} B".format(int(n))
        n /= 1024.0
    return str(n)


def fp32_bytes(model) -> int:
    return int(sum(p.numel() * 4 for p in model.state_dict().values() if p.dtype.is_floating_point))


def run_demo(out: str, cfg: TrainConfig, codec: str = "zstd") -> dict:
    from .cli import machine_name

    t0 = time.perf_counter()
    os.makedirs(out, exist_ok=True)
    run = Run(os.path.join(out, "run"), cfg)
    hier = run.hier
    click.echo("edgetool demo: Super-Sub on {} ({} superclasses: {}), output in {}".format(
        "the shipped Fashion-MNIST sample" if cfg.data == "sample" else cfg.data, hier.n_super,
        ", ".join(hier.superclasses), out), err=True)
    N = hier.n_super
    steps = ["flat network", "superclass network"] + ["vanilla subclass [{}]".format(s) for s in hier.superclasses] + \
            ["QAT superclass network"] + ["QAT subclass [{}]".format(s) for s in hier.superclasses]
    done = [0]

    def stage(msg):
        done[0] += 1
        click.echo("[{}/{}] {}".format(done[0], len(steps) + 2, msg), err=True)

    stage("training the flat network (lower bound)")
    flat = run.flat()
    stage("training the superclass network")
    sup = run.superclass()
    vanilla = []
    for k, s in enumerate(hier.superclasses):
        stage("fine-tuning vanilla fp32 subclass network [{}]".format(s))
        vanilla.append(run.vanilla(k))
    stage("QAT of the superclass network (per-channel int8 weights, int8 activations)")
    run.super_qat()
    for k, s in enumerate(hier.superclasses):
        stage("QAT fine-tune of subclass network [{}] (scales frozen)".format(s))
        run.sub_qat(k)
    stage("exporting the bundle ({} deltas)".format(codec))
    bundle_dir = os.path.join(out, "bundle")
    manifest = run.export(bundle_dir, codec)
    stage("evaluating the efficient int8 Super-Sub through the runtime (ONNX Runtime)")
    y = run.yte.numpy()
    rt = evaluate_bundle(bundle_dir, run.xte.numpy(), run.sup_of[y], run.loc_of[y])

    flat_acc = run.eval_flat()
    oracle = run.eval_supersub(sup, vanilla, oracle=True)["accuracy"]
    van = run.eval_supersub(sup, vanilla)
    base_size = manifest["base"]["size"]
    delta_sizes = [d["stored_size"] for d in manifest["deltas"]]
    bundle_bytes = base_size + sum(delta_sizes)
    x = sum(delta_sizes) / N / base_size
    fp32 = fp32_bytes(sup)
    sw = rt["per_image"]["switch_ms"]
    results = {
        "dataset": "fashion-mnist sample" if cfg.data == "sample" else cfg.data,
        "machine": machine_name(),
        "config": cfg.__dict__,
        "superclasses": hier.superclasses,
        "test_images": int(len(y)),
        "accuracy": {"flat": flat_acc, "oracle": oracle, "vanilla_fp32": van["accuracy"],
                     "efficient_int8_runtime": rt["accuracy"]},
        "superclass_accuracy": {"vanilla_fp32": van["superclass_accuracy"], "int8_runtime": rt["superclass_accuracy"]},
        "storage_bytes": {"bundle": bundle_bytes, "base_onnx": base_size, "deltas": delta_sizes,
                          "n_plus_1_int8": (N + 1) * base_size, "one_plus_0.2N_int8": int(round((1 + 0.2 * N) * base_size)),
                          "n_plus_1_fp32": (N + 1) * fp32, "flat_fp32": fp32_bytes(flat)},
        "storage_networks": {"bundle": 1 + x * N, "x_per_subclass": x},
        "switch_latency_ms": sw,
        "runtime": rt,
        "bundle": os.path.abspath(bundle_dir),
        "wall_seconds": time.perf_counter() - t0,
        "train_seconds": run.train_seconds(),
    }
    with open(os.path.join(out, "results.json"), "w") as f:
        json.dump(results, f, indent=1)
    print_table(results, N)
    return results


def print_table(r: dict, N: int) -> None:
    a = r["accuracy"]
    s = r["storage_bytes"]
    rows = [
        ("flat fp32 (lower bound)", a["flat"], fmt_bytes(s["flat_fp32"]), "1 network"),
        ("oracle fp32 (upper bound)", a["oracle"], fmt_bytes(s["n_plus_1_fp32"]), "true superclass given"),
        ("vanilla fp32 Super-Sub", a["vanilla_fp32"], fmt_bytes(s["n_plus_1_fp32"]), "{} networks".format(N + 1)),
        ("efficient int8 Super-Sub", a["efficient_int8_runtime"], fmt_bytes(s["bundle"]),
         "bundle, via runtime: 1 + {:.3f}N".format(r["storage_networks"]["x_per_subclass"])),
    ]
    click.echo("")
    click.echo("{:<28} {:>9}  {:>11}  {}".format("model", "accuracy", "storage", "note"))
    click.echo("-" * 78)
    for name, acc, size, note in rows:
        click.echo("{:<28} {:>8.2f}%  {:>11}  {}".format(name, 100 * acc, size, note))
    click.echo("-" * 78)
    click.echo("storage: bundle {} vs N+1 int8 networks {} ({:.1f}x smaller) vs 1+0.2N {} (paper)".format(
        fmt_bytes(s["bundle"]), fmt_bytes(s["n_plus_1_int8"]), s["n_plus_1_int8"] / s["bundle"],
        fmt_bytes(s["one_plus_0.2N_int8"])))
    sw = r["switch_latency_ms"]
    click.echo("switch latency (decode + apply, ONNX Runtime CPU, {} switches): median {:.3f} ms, p90 {:.3f} ms".format(
        sw.get("count", 0), sw.get("median", float("nan")), sw.get("p90", float("nan"))))
    click.echo("machine: {}; {} test images; this run {:.0f} s (training {:.0f} s in all)".format(
        r["machine"], r["test_images"], r["wall_seconds"], sum(r["train_seconds"].values())))
    click.echo("")
    click.echo("bundle:  {}".format(r["bundle"]))
    click.echo("results: {}".format(os.path.join(os.path.dirname(r["bundle"]), "results.json")))
    click.echo("try:     edgetool classify {} <image.png ...>".format(r["bundle"]))
