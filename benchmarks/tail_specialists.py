#!/usr/bin/env python
"""Super-Sub on a pretrained backbone: tail specialists beside their own base, on Caltech-101 at 224 px
(or, with ``--dataset cifar10``, CIFAR-10 upscaled to 128 px: ``common/pretrained.py``).

For each seed, the finished run of ``benchmarks/pretrained_backbone.py`` (EfficientNet-Lite0, tail
after blocks.14, int8) is the base.  A copy of it trains ``--specialists K`` (k-means superclasses
of the base's class features; each specialist the int8 tail fine-tuned on its superclass; shipped
only if it beats the base on the held-out half of validation: the keep-base rule), then ``export``
and, through the runtime (ONNX Runtime, int8), the test photos with both bundles: the base alone
(the flat bundle of the seed) and the base with its specialists.  The test split is read once per
bundle; nothing is chosen on it.

Recorded per seed: which superclasses shipped (validation wins/losses and p), test accuracy of
both and their paired difference, the stored bytes of each shipped delta against the base network
under the same codec (x), the switch time to each shipped specialist (decode + apply, one thread),
and the cost of the second stage: ONNX Runtime latency of base + tail against the base alone
(batch 1 and 8, one thread, side by side) and the tail's share of the multiply-accumulates.
The costs are measured on a second bundle that ships every specialist (the keep-base rule set
aside), whose test accuracy is recorded too: what the rule protects from.

Usage:
  python benchmarks/tail_specialists.py --seeds 0 1 2 --superclasses 10 [--cache cache-fresh] [--delta-budget 20%]
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import time

import numpy as np


from common import RESULTS, mean_se, write_result  # noqa: E402
import common.pretrained as P  # noqa: E402
from common.pretrained import cli, correct, macs  # noqa: E402


def out_dir() -> str:
    return os.path.join(RESULTS, "pretrained", P.DS.specialists)


def latency(base_bundle: str, bundle: str, reps: int = 30) -> dict:
    """Median ms per batch, one thread: one network (the flat base bundle), and the base + one
    specialist's tail (the bundle with specialists: its trunk once, then the specialist's tail)."""
    from edgetool.runtime.backends import load_backend
    from edgetool.runtime.backends.base import BASE
    from edgetool.runtime.bundle.reader import Bundle

    out = {}
    with Bundle.open(bundle) as b, Bundle.open(base_bundle) as flat:
        be = load_backend("onnxruntime", b, threads=1)
        single = load_backend("onnxruntime", flat, threads=1)
        k = b.specialists[0]
        shape = b.input["shape"]
        for n in (1, 8):
            x = np.random.default_rng(0).normal(size=[n] + shape).astype(np.float32)
            one, two = [], []
            for _ in range(reps):  # interleaved, so both see the same machine
                be.switch(BASE)
                t0 = time.perf_counter()
                single.infer(x)
                one.append(time.perf_counter() - t0)
                t0 = time.perf_counter()
                _, trunk = be.infer_trunk(x)
                t1 = time.perf_counter()
                be.switch(k)  # (the switch is measured on its own: switch_ms)
                t2 = time.perf_counter()
                be.infer_tail(trunk)
                two.append((t1 - t0) + (time.perf_counter() - t2))
                be.switch(BASE)
            out["batch{}".format(n)] = {
                "one_network_ms": 1e3 * float(np.median(one)),
                "base_plus_tail_ms": 1e3 * float(np.median(two)),
                "ratio": float(np.median(two) / np.median(one)),
            }
    return out


def switch_ms(bundle: str, reps: int = 50) -> dict:
    """Median ms of a switch from the base to each shipped specialist (decode + apply), one thread."""
    from edgetool.runtime.backends import load_backend
    from edgetool.runtime.backends.base import BASE
    from edgetool.runtime.bundle.reader import Bundle

    out = {}
    with Bundle.open(bundle) as b:
        be = load_backend("onnxruntime", b, threads=1)
        for k in b.specialists:
            ts = []
            for _ in range(reps):
                be.switch(BASE)
                t0 = time.perf_counter()
                be.switch(k)
                ts.append(time.perf_counter() - t0)
            out[b.superclasses[k].name] = 1e3 * float(np.median(ts))
    return out


def _rss_kib() -> dict:
    with open("/proc/self/status") as f:
        v = dict(line.split(":", 1) for line in f if line.startswith(("VmRSS", "VmHWM")))
    return {k: int(x.split()[0]) for k, x in v.items()}


def _settled_kib() -> dict:
    """Resident KiB once freed heap memory is handed back (as ``edgetool profile`` reads it)."""
    from edgetool.runtime.profile.memprobe import settled

    return {k: v // 1024 for k, v in settled().items() if k in ("VmRSS", "VmHWM")}


def probe(bundle: str, mode: str) -> dict:
    """In this (fresh) process: resident KiB with the runtime and ONNX Runtime imported and the bundle
    open but no network loaded ("none"), then after loading the ONNX Runtime backend and classifying
    one image with the base alone ("one") or with the base's trunk + a specialist's tail ("two"):
    as the kernel reports it ("after"), then once freed heap memory is handed back ("settled")."""
    import onnxruntime  # noqa: F401  (the library's own pages are not the network's)

    from edgetool.runtime.backends import load_backend
    from edgetool.runtime.backends.base import BASE
    from edgetool.runtime.bundle.reader import Bundle

    with Bundle.open(bundle) as b:
        x = np.random.default_rng(0).normal(size=[1] + b.input["shape"]).astype(np.float32)
        before = _settled_kib()
        if mode == "none":
            return {"before": before, "after": before}
        be = load_backend("onnxruntime", b, threads=1)
        if mode == "one":
            for _ in range(3):
                be.infer(x)
        else:
            for _ in range(3):
                _, trunk = be.infer_trunk(x)
                be.switch(b.specialists[0])
                be.infer_tail(trunk)
                be.switch(BASE)
        after = _rss_kib()
        return {"before": before, "after": after, "settled": _settled_kib()}


def resident(base_bundle: str, all_bundle: str) -> dict:
    """Resident memory of one network (the flat base bundle) against the two-stage path (the base's
    trunk + a specialist's tail, its switch included), each in its own fresh process, side by side."""
    out = {}
    for name, bundle, mode in (("one_network", base_bundle, "one"), ("two_stage", all_bundle, "two")):
        proc = subprocess.run(
            [sys.executable, os.path.abspath(__file__), "--probe", bundle, mode],
            capture_output=True, text=True, check=True,
        )  # fmt: skip
        out[name] = json.loads(proc.stdout.strip().splitlines()[-1])
    one = out["one_network"]["after"]["VmRSS"] - out["one_network"]["before"]["VmRSS"]
    two = out["two_stage"]["after"]["VmRSS"] - out["two_stage"]["before"]["VmRSS"]
    live = {k: out[k]["settled"]["VmRSS"] - out[k]["before"]["VmRSS"] for k in out}
    return {
        "processes_kib": out,
        "network_kib": {"one_network": one, "two_stage": two},
        "ratio_networks": two / one,  # what loading the network(s) added to the process
        # the same, freed heap memory handed back first (glibc malloc_trim): what the networks hold
        "network_kib_settled": live,
        "ratio_networks_settled": live["two_stage"] / live["one_network"],
        "ratio_processes": out["two_stage"]["after"]["VmRSS"] / out["one_network"]["after"]["VmRSS"],
        "ratio_peak": out["two_stage"]["after"]["VmHWM"] / out["one_network"]["after"]["VmHWM"],
    }


def spec_name(seed: int, k: int, budget) -> str:
    """The work folder's name of a seed's specialists run (under delta budget *budget*, None: the
    run's default); its bundles are ``bundle-`` + that name (+ ``-all``: every specialist shipped)."""
    tag = "" if budget is None else "-b" + str(budget).replace("%", "pct").replace(".", "p")
    return "s{}-seed{}-spec{}{}".format(P.DS.size, seed, k, tag)


def run_seed(seed: int, k: int, cache: str, budget=None) -> dict:
    from edgetool.runtime.bundle.reader import Bundle
    from edgetool.toolchain.evaluate.bounds import same_codec_x
    from edgetool.toolchain.train.trunk_cache import list_data

    src = os.path.join(P.WORK, "s{}-seed{}".format(P.DS.size, seed))
    name = spec_name(seed, k, budget)
    run = os.path.join(P.WORK, name)
    if not os.path.isdir(run):
        os.makedirs(run)
        for f in ("config.json", "data.json", "tail.pt", "int8.pt", "metrics.json"):
            shutil.copy2(os.path.join(src, f), run)
    t0 = time.perf_counter()
    extra = [] if budget is None else ["--delta-budget", budget]
    cli("train", run, "--specialists", k, "--cache", os.path.join(P.WORK, cache), *extra)
    train_s = time.perf_counter() - t0
    base_bundle = os.path.join(P.WORK, "bundle-s{}-seed{}".format(P.DS.size, seed))
    bundle = os.path.join(P.WORK, "bundle-" + name)
    if not os.path.isfile(os.path.join(bundle, "manifest.json")):
        cli("export", run, "--out", bundle, "--force")
    if not os.path.isdir(base_bundle):
        cli("export", src, "--out", base_bundle)
    with open(os.path.join(run, "specialists.json")) as f:
        rec = json.load(f)
    _, test, classes = list_data(P.DS.data_dir(), 0, 0, seed)
    labels = [classes[i] for i in test.labels]
    base_ok, _ = correct(base_bundle, test.paths, labels)
    spec_ok, passes = correct(bundle, test.paths, labels)
    diff = spec_ok.astype(float) - base_ok.astype(float)
    with Bundle.open(bundle) as b:
        stored = b.stored_bytes()
        deltas = {d["superclass"]: d["stored_size"] for d in b.manifest["deltas"]}
        shipped = [b.superclasses[i].name for i in b.specialists]
        changed = len(b.model.changed or ())
    result = {
        "seed": seed,
        "superclasses": k,
        "delta_budget": rec.get("delta_budget", "dense"),
        "bundle": "bundle-" + name,
        "specialists_seconds": train_s,
        "decisions": rec["superclasses"],
        "shipped": shipped,
        "test_images": int(len(base_ok)),
        "test": {
            "base": float(base_ok.mean()),
            "with_specialists": float(spec_ok.mean()),
            "paired_difference_points": 100 * float(diff.mean()),
            "paired_95_interval_points": 100 * 1.96 * float(diff.std(ddof=1) / np.sqrt(len(diff))),
            "images_rerouted_to_a_specialist": int(passes),
        },
        "storage": {
            "base_onnx_bytes": stored["base"],
            "delta_bytes": {n: deltas[n] for n in shipped},
            "x_per_specialist": {n: deltas[n] / stored["base"] for n in shipped},
            "refit_tensors_changed": changed,
        },
    }
    # Every specialist shipped, the keep-base rule set aside: what the rule protects from, and the
    # mechanism's costs (x, switch, base + tail latency) measured on real trained deltas.
    every = run + "-all"
    if not os.path.isdir(every):
        shutil.copytree(run, every)
    with open(os.path.join(every, "specialists.json")) as f:
        forced = json.load(f)
    for d in forced["superclasses"].values():
        d["ship"] = True
    with open(os.path.join(every, "specialists.json"), "w") as f:
        json.dump(forced, f, indent=1)
    all_bundle = bundle + "-all"
    if not os.path.isfile(os.path.join(all_bundle, "manifest.json")):
        cli("export", every, "--out", all_bundle, "--force")
    all_ok, all_passes = correct(all_bundle, test.paths, labels)
    d_all = all_ok.astype(float) - base_ok.astype(float)
    with Bundle.open(all_bundle) as b:
        sizes = {d["superclass"]: d["stored_size"] for d in b.manifest["deltas"]}
        base_stored = b.stored_bytes()["base"]
        all_changed = len(b.model.changed or ())
        codec_x = same_codec_x(all_bundle, b.manifest)
    result["every_specialist_shipped"] = {
        "test": float(all_ok.mean()),
        "paired_difference_points": 100 * float(d_all.mean()),
        "paired_95_interval_points": 100 * 1.96 * float(d_all.std(ddof=1) / np.sqrt(len(d_all))),
        "images_rerouted_to_a_specialist": int(all_passes),
        "delta_bytes": sizes,
        "x_per_specialist": {n: v / base_stored for n, v in sizes.items()},
        "x_same_codec": {
            "codec": codec_x["codec"],
            "base_stored": codec_x["base_stored"],
            "per_specialist": dict(zip(sizes, codec_x["per_superclass"])),
        },
        "refit_tensors_changed": all_changed,
        "switch_ms": switch_ms(all_bundle),
        "latency": latency(base_bundle, all_bundle),
        "resident_memory": resident(base_bundle, all_bundle),
    }
    write_result(os.path.join(out_dir(), "seed{}.json".format(seed)), result)
    return result


def measure_again(seed: int, k: int, what, budget=None) -> dict:
    """A finished seed's result with the runtime's costs *what* (of ``memory``, ``latency``,
    ``switch``) measured again on its bundles (nothing trained or evaluated again)."""
    path = os.path.join(out_dir(), "seed{}.json".format(seed))
    with open(path) as f:
        result = json.load(f)
    base_bundle = os.path.join(P.WORK, "bundle-s{}-seed{}".format(P.DS.size, seed))
    all_bundle = os.path.join(P.WORK, "bundle-{}-all".format(spec_name(seed, k, budget)))
    costs = result["every_specialist_shipped"]
    if "memory" in what:
        costs["resident_memory"] = resident(base_bundle, all_bundle)
    if "latency" in what:
        costs["latency"] = latency(base_bundle, all_bundle)
    if "switch" in what:
        costs["switch_ms"] = switch_ms(all_bundle)
    write_result(path, result)
    return result


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="*", default=[0, 1, 2])
    ap.add_argument("--superclasses", type=int, help="k-means superclasses (default: 10, 4 on CIFAR-10)")
    P.add_dataset_option(ap)
    ap.add_argument("--cache", default="cache-fresh", help="the trunk cache folder in the work folder")
    ap.add_argument(
        "--again",
        nargs="+",
        choices=("memory", "latency", "switch"),
        help="measure only these runtime costs again, into the finished seeds' results",
    )
    ap.add_argument(
        "--delta-budget",
        help="train the specialists under this delta budget (edgetool train --delta-budget; default: the run's)",
    )
    ap.add_argument("--probe", nargs=2, metavar=("BUNDLE", "MODE"), help=argparse.SUPPRESS)
    a = ap.parse_args()
    ds = P.use(a.dataset)
    a.superclasses = a.superclasses or ds.superclasses
    if a.probe:
        print(json.dumps(probe(*a.probe)))
        return
    rows = [
        measure_again(s, a.superclasses, a.again, a.delta_budget)
        if a.again
        else run_seed(s, a.superclasses, a.cache, a.delta_budget)
        for s in a.seeds
    ]
    summary = {
        "arch": "efficientnet-lite0",
        "image_size": P.DS.size,
        "data": P.DS.data,
        "seeds": [r["seed"] for r in rows],
        "superclasses": a.superclasses,
        "delta_budget": rows[0].get("delta_budget", "dense"),
        "base_test": mean_se(100 * r["test"]["base"] for r in rows),
        "with_specialists_test": mean_se(100 * r["test"]["with_specialists"] for r in rows),
        "paired_difference_points": mean_se(r["test"]["paired_difference_points"] for r in rows),
        "shipped_per_seed": [len(r["shipped"]) for r in rows],
        "every_specialist_shipped_test": mean_se(100 * r["every_specialist_shipped"]["test"] for r in rows),
        "macs": macs(P.DS.size),
        "controls": P.flat_controls(),
        "note": "± is the standard error over seeds; per seed, the paired 95% interval is over the test photos",
    }
    write_result(os.path.join(out_dir(), "summary.json"), summary)
    lines = [
        "# Tail specialists on EfficientNet-Lite0 ({}, {} px, {} superclasses)".format(
            P.DS.title, P.DS.size, a.superclasses
        ),
        "",
        "| seed | shipped | base (int8) | with specialists | paired diff (95%) | x per specialist |",
        "|---:|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        t = r["test"]
        xs = ", ".join("{:.3f}".format(v) for v in r["storage"]["x_per_specialist"].values()) or "-"
        lines.append(
            "| {} | {} of {} | {:.2f}% | {:.2f}% | {:+.2f} ± {:.2f} | {} |".format(
                r["seed"], len(r["shipped"]), r["superclasses"], 100 * t["base"], 100 * t["with_specialists"],
                t["paired_difference_points"], t["paired_95_interval_points"], xs,
            )
        )  # fmt: skip
    m = summary["macs"]
    c = summary["controls"]
    if "missing" in c:
        lines += ["", "Flat controls: not measured yet ({}).".format(c["missing"])]
    else:
        lines += ["", "Flat controls, the same training budget (seeds {}):".format(", ".join(map(str, c["seeds"])))]
        for k in ("flat_budget", "flat_cost"):
            t, d = c["test_percent"][k], c["with_specialists_minus_control"][k]
            lines.append(
                "- {}, {:.2f}x MACs: {:.2f}%; with specialists − it {:+.2f} (95% CI [{:+.2f}, {:+.2f}]).".format(
                    c["training"][k], c["macs_per_image_relative"][k], t["mean"], d["points"], *d["ci95"]
                )
            )
        lines.append("Chosen on validation: {} ([{v}](../{v}/summary.md)).".format(c["best_control"], v=P.DS.verdict))
    lines += ["", "Two-stage MACs with the trunk shared: {:.3f} x one network.".format(m["two_stage_ratio"])]
    for r in rows:
        e = r["every_specialist_shipped"]
        lines.append(
            "Seed {}, every specialist shipped (keep-base set aside): {:.2f}% ({:+.2f} ± {:.2f} against the base); "
            "x per specialist {:.3f} to {:.3f} (over the raw base.onnx).".format(
                r["seed"], 100 * e["test"], e["paired_difference_points"], e["paired_95_interval_points"],
                min(e["x_per_specialist"].values()), max(e["x_per_specialist"].values()),
            )
        )  # fmt: skip
        if "x_same_codec" in e:
            xs = list(e["x_same_codec"]["per_specialist"].values())
            lines.append(
                "Seed {}: x with base.onnx under the same codec ({}): {:.3f} to {:.3f}, median {:.3f}; "
                "{} of {} at most 0.05.".format(
                    r["seed"], e["x_same_codec"]["codec"], min(xs), max(xs), float(np.median(xs)),
                    sum(x <= 0.05 for x in xs), len(xs),
                )
            )  # fmt: skip
        if "resident_memory" in e:
            mem = e["resident_memory"]
            held = ""
            if "ratio_networks_settled" in mem:
                held = "; held once freed heap memory is handed back (as edgetool profile counts) {:,} vs {:,} KiB"
                held = held.format(mem["network_kib_settled"]["two_stage"], mem["network_kib_settled"]["one_network"])
                held += " (x{:.3f})".format(mem["ratio_networks_settled"])
            lines.append(
                "Seed {} resident memory, two-stage vs one network (ONNX Runtime, fresh processes): networks "
                "{:,} vs {:,} KiB (x{:.3f}); whole process x{:.3f}; peak x{:.3f}{}.".format(
                    r["seed"], mem["network_kib"]["two_stage"], mem["network_kib"]["one_network"],
                    mem["ratio_networks"], mem["ratio_processes"], mem["ratio_peak"], held,
                )
            )  # fmt: skip
        for n, v in e["latency"].items():
            lines.append(
                "Seed {} {}: base + tail {:.1f} ms vs one network {:.1f} ms (x{:.2f}).".format(
                    r["seed"], n, v["base_plus_tail_ms"], v["one_network_ms"], v["ratio"]
                )
            )
        sw = list(e["switch_ms"].values())
        lines.append(
            "Seed {} switch base -> specialist: median {:.2f} ms, slowest {:.2f} ms (one thread).".format(
                r["seed"], float(np.median(sw)), max(sw)
            )
        )
    with open(os.path.join(out_dir(), "summary.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
