"""The escape hatch: `export --model flat` writes a single-network bundle that every device tool
takes, and that classifies exactly as the int8 flat control does in torch."""

import json
import os

import numpy as np
import pytest

from conftest import run_cli

pytest.importorskip("onnxruntime")


@pytest.fixture(scope="module")
def flat_bundle(tiny_run, tmp_path_factory):
    out = str(tmp_path_factory.mktemp("flat") / "bundle")
    proc = run_cli("export", tiny_run.path, "--out", out, "--model", "flat")
    assert proc.returncode == 0, proc.stderr
    assert "model: flat (one network over 10 classes; no switch)" in proc.stdout
    return out


def test_manifest_says_flat_and_runtime_matches_torch(flat_bundle, tiny_run):
    torch = pytest.importorskip("torch")
    from edgetool.runtime.backends import load_backend
    from edgetool.runtime.bundle.reader import Bundle
    from edgetool.runtime.classifier import SuperSubClassifier
    from edgetool.toolchain.train import fit as training

    m = json.load(open(os.path.join(flat_bundle, "manifest.json")))
    assert m["model"] == {"kind": "flat", "classes": list(tiny_run.train.classes)} and m["head_width"] == 10
    assert "training" not in m  # no deltas, so no delta budget
    x = tiny_run.xte[:64]
    want = training.predict_logits(tiny_run.flat_control("budget"), x).argmax(1).numpy()
    with Bundle.open(flat_bundle) as b:
        clf = SuperSubClassifier(load_backend("onnxruntime", b), policy="per-image")
        preds = clf.classify(x.numpy())
    got = [tiny_run.train.classes.index(p.label) for p in preds]
    assert np.mean(np.array(got) == want) >= 0.98  # int8 ONNX Runtime against torch fake-quant
    assert clf.passes == 0  # the one network only: no subclass network ran
    sup = tiny_run.sup_of
    assert all(p.superclass == sup[c] for p, c in zip(preds, got))
    assert all(0 < p.confidence <= p.p_super <= 1 for p in preds)  # p_super sums the class's superclass
    del torch


def test_flat_manifest_is_checked(flat_bundle, tmp_path):
    import shutil

    from edgetool.runtime.errors import BundleError
    from edgetool.runtime.bundle.reader import Bundle

    for change, message in (
        (lambda m: m["model"].update(kind="flatter"), "model.kind"),
        (lambda m: m["model"]["classes"].pop(), "model.classes"),
        (lambda m: m["model"]["classes"].__setitem__(0, m["model"]["classes"][1]), "model.classes"),
        (lambda m: m.update(training={"delta_budget": {"mode": "dense", "value": 0, "text": "0"}}), "no deltas"),
    ):
        d = tmp_path / "b"
        if d.exists():
            shutil.rmtree(d)
        shutil.copytree(flat_bundle, d)
        m = json.load(open(d / "manifest.json"))
        change(m)
        json.dump(m, open(d / "manifest.json", "w"))
        with pytest.raises(BundleError, match=message):
            Bundle.open(str(d))


def test_flat_bundle_through_classify_inspect_doctor(flat_bundle, sample_pngs):
    proc = run_cli("classify", flat_bundle, *sample_pngs, "--json")
    assert proc.returncode == 0, proc.stderr
    rows = [json.loads(line) for line in proc.stdout.splitlines()]
    assert len(rows) == len(sample_pngs) and all(r["class"] and r["superclass"] for r in rows)
    proc = run_cli("inspect", flat_bundle)
    assert proc.returncode == 0 and "model       flat: one network over 10 classes" in proc.stdout
    assert "routing" not in proc.stdout
    proc = run_cli("doctor", flat_bundle)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "flat: one network over 10 classes" in proc.stdout


def test_flat_bundle_through_camera_and_profile(flat_bundle, sample_pngs, tmp_path):
    pytest.importorskip("cv2")
    folder = tmp_path / "frames"
    folder.mkdir()
    for p in sample_pngs:
        os.link(p, folder / os.path.basename(p))
    proc = run_cli("camera", flat_bundle, folder, "--headless", "--json")
    assert proc.returncode == 0, proc.stderr
    recs = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    assert len([r for r in recs if "class" in r]) == len(sample_pngs)
    s = recs[-1]["settings"]
    assert (s["policy"], s["requested_policy"]) == ("flat", "sticky") and "enter" not in s  # nothing routes
    assert {r["network"] for r in recs if r["type"] == "frame"} == {"flat"}
    line = "policy flat (one network, no routing; --policy sticky has nothing to route)"
    assert proc.stderr.startswith(line) and proc.stderr.count(line) == 2  # at the start and in the summary


def test_profile_describes_a_flat_bundle_as_one_network(flat_bundle, tmp_path):
    """No superclasses, no switch, no deltas or codecs, no vanilla form: one network's inference, end to
    end (one row, its labels), throughput and resident memory."""
    from edgetool.runtime.profile.schema import problems

    out = tmp_path / "prof"
    proc = run_cli("profile", flat_bundle, "--out", out, "--iterations", "2", "--warmup", "1", "--batch", "2",
                   "--threads", "1", timeout=900)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("model: flat (one network over 10 classes; no routing, no switch, no vanilla")
    assert "switch" not in proc.stdout.replace("no switch", "") and "vanilla" not in proc.stdout.replace(
        "no vanilla", ""
    )
    r = json.load(open(out / "profile.json"))
    assert r["model"] == "flat" and problems(r) == []
    assert set(r["stages"]) == {"inference", "cold_load"} and list(r["memory"]["forms"]) == ["single"]
    assert "superclasses" not in r["bundle"] and r["bundle"]["classes"] == 10
    assert not {"storage", "codecs", "projections", "ratios"} & set(r)
    row = r["end_to_end"]["one-engine"]["flat"]
    assert list(r["end_to_end"]) == ["one-engine"] and len(row["predictions"]) == 2
    md = (out / "profile.md").read_text()
    assert "Codecs" not in md and "vanilla" not in md and "superclasses" not in md and "| one-engine | flat |" in md
    broken = dict(r, codecs={})  # the schema check can fail on a flat report
    assert problems(broken) == ["codecs: a flat bundle has none"]


def test_profile_sets_two_bundles_side_by_side(flat_bundle, tiny_bundle, tmp_path):
    """`edgetool profile A B`: both measured in one run; the text, JSON, Markdown and HTML hold the
    side-by-side (latency, throughput, memory, storage; labels on the samples both bundles carry)."""
    out = tmp_path / "cmp"
    args = ["--iterations", "2", "--warmup", "0", "--batch", "4", "--threads", "1", "--modes", "one-engine"]
    proc = run_cli("profile", flat_bundle, tiny_bundle, "--out", out, *args, "--codecs", "zstd", timeout=900)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0] == "A: " + flat_bundle and any(line == "B: " + tiny_bundle for line in lines)
    r = json.load(open(out / "profile.json"))
    assert r["schema"] == "edgetool.profile-comparison/1" and [x["model"] for x in r["reports"]] == [
        "flat",
        "super-sub",
    ]
    c = r["comparison"]
    assert (c["a"]["end_to_end_row"], c["b"]["end_to_end_row"]) == ("one-engine flat", "one-engine per-image")
    for key in ("end_to_end_median_ms", "images_per_s_at_batch", "resident_bytes", "bytes_on_disk"):
        assert c["a"][key] > 0 and c["b"][key] > 0 and c["b_over_a"][key] == pytest.approx(c["b"][key] / c["a"][key])
    assert c["a"]["bytes_on_disk"] == json.load(open(out / "profile.json"))["reports"][0]["bundle"]["bytes_on_disk"]
    same = c["same_labels"]  # one run's two bundles: the same samples
    assert same["of"] == 4 and 0 <= same["agree"] <= 4
    text = "\n".join(lines)
    assert "end to end per image, median [ms]" in text and "bytes on disk" in text and "resident memory" in text
    md, page = (out / "profile.md").read_text(), (out / "profile.html").read_text()
    for doc in (md, page):
        assert "A and B side by side" in doc and doc.count("End to end per image") == 2
    assert "id='plot-a-cdf'" in page and "id='plot-b-storage'" in page  # each bundle's plots, apart


def test_flat_bundle_deploys_to_a_local_target(flat_bundle, tmp_path):
    from edgetool.runtime.target.install import Target

    keys = tmp_path / "keys"
    keys.mkdir()
    assert run_cli("keygen", keys / "k").returncode == 0
    signed = tmp_path / "signed"
    import shutil

    shutil.copytree(flat_bundle, signed)
    from edgetool.runtime.bundle.signature import sign_bundle

    sign_bundle(str(signed), str(keys / "k.key"))
    root = tmp_path / "device"
    assert run_cli("target", "trust", root, str(keys / "k.pub")).returncode == 0
    proc = run_cli("deploy", signed, "--to", root, "--device-profile", "cpu", "--doctor")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    st = Target(str(root)).status()
    assert st["current"] and st["checks"]["doctor"]["ok"]
