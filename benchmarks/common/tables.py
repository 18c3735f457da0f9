"""The README's performance tables, rendered from benchmarks/results/performance.json."""

from __future__ import annotations

REPEAT_STAGES = ("delta_read", "decode_zstd", "apply")  # a switch to a delta verified before
FIRST_ONLY = ("sha256", "sha256_decoded")  # paid by the first switch to each delta
MIB = 2**20


def _med(stages: dict, name: str):
    s = stages.get(name, {})
    return s.get("median") if s.get("count") else None


def switch_summary(s: dict, codec: str) -> dict:
    """Switch time, stage medians and the largest stage of a repeated switch, for *codec*."""
    names = ("delta_read", "decode_" + codec, "apply")
    med = {k: _med(s, k) for k in names + FIRST_ONLY}
    repeat = {k: med[k] for k in names if med[k] is not None}
    largest = max(repeat, key=repeat.get)
    return {
        "switch_to_subclass_ms": s["switch_to_subclass"],
        "stage_medians_ms": med,
        "largest_stage": largest,
        "largest_stage_share": repeat[largest] / sum(repeat.values()),
        "first_switch_extra_ms": sum(med[k] or 0.0 for k in FIRST_ONLY),
        "stored_bytes_mean": s.get("stored_bytes_mean"),
    }


def scaling_summary(name: str, pct: int, r: dict) -> dict:
    s = r["stages"]
    med = {k: _med(s, k) for k in REPEAT_STAGES + FIRST_ONLY}
    repeat = {k: med[k] for k in REPEAT_STAGES if med[k] is not None}
    largest = max(repeat, key=repeat.get)
    forms = r["memory"]["forms"]
    b = r["bundle"]
    return {
        "network": name,
        "changed_percent": pct,
        "changed_codes_fraction": b["changed_codes_fraction"],
        "int8_weight_bytes": b["int8_weight_bytes"],
        "refit_bytes": b["refit_bytes"],
        "delta_bytes_mean": b["delta_bytes_mean"],
        "base_onnx_bytes": b["base_onnx_bytes"],
        "switch_to_subclass_ms": s["switch_to_subclass"],
        "switch_to_base_ms": s["switch_to_base"],
        "stage_medians_ms": med,
        "largest_stage": largest,
        "largest_stage_share": repeat[largest] / sum(repeat.values()),
        "first_switch_extra_ms": sum(med[k] or 0.0 for k in FIRST_ONLY),
        "cold_load_ms": s["cold_load"],
        "codecs": r["codecs"],
        "inference_ms": s["superclass_inference"],
        "resident_bytes": {f: forms[f]["resident_bytes"] for f in ("single", "efficient", "vanilla")},
        "efficient_over_single": r["ratios"]["efficient_over_single"],
        "vanilla_over_single": r["ratios"]["vanilla_over_single"],
        "machine": r["machine"],
    }


def _x(a, b) -> str:
    return "{:.1f}x".format(a / b) if a and b else "-"


def demo_rows(d: dict) -> list:
    s, t, f = d["stages"], d["throughput"], d["memory"]["forms"]
    c = d["codecs"]
    sw, cold = s["switch_to_subclass"]["median"], s["cold_load"]["median"]
    eff, van, single = (f[k]["resident_bytes"] for k in ("efficient", "vanilla", "single"))
    return [
        (
            "switch to a subclass network (read + zstd decode + add; delta verified before)",
            "{:.3f} ms".format(sw),
            "cold model load: new session on the full subclass network + first inference",
            "{:.2f} ms".format(cold),
            "switch {} faster".format(_x(cold, sw)),
        ),
        (
            "7z (LZMA2) decode of a delta",
            "{:.3f} ms".format(c["7z"]["decode_ms"]["median"]),
            "zstd decode",
            "{:.3f} ms".format(c["zstd"]["decode_ms"]["median"]),
            "7z {} slower".format(_x(c["7z"]["decode_ms"]["median"], c["zstd"]["decode_ms"]["median"])),
        ),
        (
            "resident memory, efficient (1 session + deltas)",
            "{:.1f} MiB".format(eff / MIB),
            "vanilla (N+1 = {} sessions)".format(d["bundle"]["superclasses"] + 1),
            "{:.1f} MiB".format(van / MIB),
            "efficient = {:.2f}x vanilla".format(eff / van),
        ),
        (
            "resident memory, efficient",
            "{:.1f} MiB".format(eff / MIB),
            "the single base network",
            "{:.1f} MiB".format(single / MIB),
            "efficient = {:.2f}x single".format(eff / single),
        ),
        (
            "two-stage throughput, batch {} (superclass-batched)".format(d["settings"]["batch"]),
            "{:.0f} images/s".format(t["two_stage_images_per_s"]),
            "the single base network",
            "{:.0f} images/s".format(t["single_throughput_images_per_s"]),
            "two-stage = {:.2f}x single".format(t["two_stage_images_per_s"] / t["single_throughput_images_per_s"]),
        ),
    ]


def scaling_lines(rows: list) -> list:
    out = [
        "| network | int8 weights | codes changed | delta zstd / sparse | switch median, zstd | largest stage "
        "(share) | switch median, sparse | largest stage (share) | first switch adds (sha256) | resident: "
        "efficient / single / vanilla |",
        "|---|---:|---:|---:|---:|---|---:|---|---:|---|",
    ]
    for r in rows:
        res = r["resident_bytes"]
        sp = r["sparse"]
        out.append(
            "| {} | {} | {:.0%} | {} / {} | {:.2f} ms | {} ({:.0%}) | {:.2f} ms "
            "| {} ({:.0%}) | {:.2f} ms | {:.0f} / {:.0f} / {:.0f} MiB ({:.2f}x / 1 / {:.2f}x) |".format(
                r["network"],
                _size(r["int8_weight_bytes"]),
                r["changed_codes_fraction"],
                _size(r["delta_bytes_mean"]),
                _size(sp["stored_bytes_mean"]),
                r["switch_to_subclass_ms"]["median"],
                _stage(r["largest_stage"]),
                r["largest_stage_share"],
                sp["switch_to_subclass_ms"]["median"],
                _stage(sp["largest_stage"]) + (", stored as zstd" if sp.get("dense") else ""),
                sp["largest_stage_share"],
                r["first_switch_extra_ms"],
                res["efficient"] / MIB,
                res["single"] / MIB,
                res["vanilla"] / MIB,
                r["efficient_over_single"],
                r["vanilla_over_single"],
            )
        )
    return out


def _size(n: float) -> str:
    return "{:.1f} MiB".format(n / MIB) if n >= MIB else "{:.0f} KiB".format(n / 1024)


def _stage(name: str) -> str:
    return {"decode_zstd": "zstd decode", "decode_sparse": "sparse decode", "apply": "add", "delta_read": "read"}.get(
        name, name
    )


def targets(rows: list) -> list:
    r18 = [r for r in rows if r["network"] == "resnet18" and r["changed_percent"] == 10]
    worst = max((r["efficient_over_single"] for r in rows), default=None)
    out = []
    if r18:
        sw = min(r18[0]["switch_to_subclass_ms"]["median"], r18[0]["sparse"]["switch_to_subclass_ms"]["median"])
        out.append(
            "- Target: ResNet-18 switch <= 5 ms at 10% changed codes: median {:.2f} ms (best codec), **{}**.".format(
                sw, "met" if sw <= 5.0 else "missed"
            )
        )
    if r18 and r18[0].get("sparse", {}).get("stage_medians_ms"):
        med = r18[0]["sparse"]["stage_medians_ms"]
        out.append(
            "- ResNet-18 at 10% with sparse deltas, medians per stage of a switch: read {}, decode (two zstd "
            "frames, gaps checked) {}, in-place add (positions summed a chunk at a time, scatter-add) {}; the "
            "first switch to each delta adds {} (sha256 of the file) and {} (sha256 of the decoded delta).".format(
                *(
                    "{:.2f} ms".format(med[k]) if med.get(k) is not None else "-"
                    for k in ("delta_read", "decode_sparse", "apply", "sha256", "sha256_decoded")
                )
            )
        )
    out += dominant(rows)
    if worst is not None:
        out.append(
            "- Target: efficient resident memory <= 1.1x one network: at most {:.2f}x over these bundles, "
            "**{}**.".format(worst, "met" if worst <= 1.1 else "missed")
        )
    return out


def dominant(rows: list) -> list:
    """Which stage dominates a switch: per stage, the rows where it is the largest, and its share."""
    out = []
    for codec, pick in (("zstd", lambda r: r), ("sparse", lambda r: r["sparse"])):
        chosen = [(r, pick(r)) for r in rows if codec == "zstd" or not r["sparse"].get("dense")]
        by_stage: dict = {}
        for r, s in chosen:
            by_stage.setdefault(_stage(s["largest_stage"]), []).append(
                "{} {}% ({:.0%})".format(r["network"], r["changed_percent"], s["largest_stage_share"])
            )
        if by_stage:
            out.append(
                "- Largest stage of a switch with {} deltas{}: {}.".format(
                    codec,
                    "" if codec == "zstd" else " (stored sparse, at most 25% changed)",
                    "; ".join("{} in {}".format(k, ", ".join(v)) for k, v in by_stage.items()),
                )
            )
    return out


def _load_note(result: dict) -> str:
    loads = [x[0] for x in (result.get("load_average_at_start"), result.get("load_average_at_end")) if x]
    if not loads:
        return ""
    return " Load average (1 min) {}: the figures include waiting for the CPU.".format(
        " -> ".join("{:.1f}".format(x) for x in loads)
    )


def markdown(result: dict) -> str:
    d = result["demo"]
    lines = [
        "Measured by `python benchmarks/performance.py` on {} (ONNX Runtime {} on the CPU, one intra-op "
        "thread, beside other jobs; JSON: [`benchmarks/results/performance.json`]"
        "(benchmarks/results/performance.json), demo report: [`profile_demo/profile.md`]"
        "(benchmarks/results/profile_demo/profile.md)).{}".format(
            result["machine"], d.get("onnxruntime", ""), _load_note(result)
        ),
        "",
        "| measured | | against | | ratio |",
        "|---|---:|---|---:|---|",
    ]
    lines += ["| {} | {} | {} | {} | **{}** |".format(*row) for row in demo_rows(d)]
    lines += [
        "",
        "Scaling with the network and the delta density (3 subclass networks each, random weights; "
        "ResNet-8 at 32x32, ResNet-18/50 at 64x64 inputs):",
        "",
    ]
    lines += scaling_lines(result["scaling"]) + [""] + targets(result["scaling"]) + [""]
    if not result.get("complete", True):
        lines += ["The run was stopped before every row above was measured; the missing rows have not run.", ""]
    return "\n".join(lines)
