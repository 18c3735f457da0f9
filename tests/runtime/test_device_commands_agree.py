"""Every device command labels real photos as `classify --policy per-image` does, under every policy,
for a flat, a flat-wide and a Super-Sub bundle.

The bundles are Fashion-MNIST networks (28x28 grey), so their labels on Caltech-101 photos mean
nothing; what is checked is that classify, camera, serve, profile and doctor agree with each other.

What holds, cell by cell (the reference is ``classify --policy per-image``):

* flat and flat-wide: one network, no routing, so every command under every policy gives the
  reference labels; the ``superclass`` stream policy gives the reference's superclass with no
  fine label; camera and serve report the policy as ``flat``.
* Super-Sub: ``per-image`` and ``batched`` give the reference labels everywhere; ``topk`` gives
  `classify --policy topk`'s (it may try a second superclass where the first is unsure);
  ``superclass`` gives the reference's superclass with no fine label.  The stream's ``sticky``
  keeps the loaded subclass network between frames, so it can differ: exactly the first frame and
  every frame at a scene cut are routed afresh and carry the reference label; with every frame a
  scene cut (``--scene-cut 0.001`` on these unrelated photos), or with ``--interval 1 --enter 0``
  (a superclass pass on every frame that always takes the top superclass), every label is the
  reference's.  Profile's ``sticky`` is the classifier's (no hysteresis): the first image is routed,
  and every image's superclass is one that the reference routed an image up to it to.
* profile and doctor classify the bundle's samples, so they run on a copy of each bundle whose
  samples are these photos, preprocessed as classify preprocesses them.

The flat bundles are written by running, as printed, the command the verdict prints.
"""

import glob
import json
import os
import re
import shlex
import shutil

import pytest

import conftest
from conftest import run_cli

pytest.importorskip("onnxruntime")
pytest.importorskip("cv2", reason="OpenCV is not installed (pip install 'edgetool[camera]')")

CALTECH = os.path.join(conftest.SHARED, "datasets", "caltech101", "101_ObjectCategories")
# two photos of each class: colour and grey JPEGs, landscape and portrait, of unrelated scenes
CLASSES = ("airplanes", "Faces_easy", "Motorbikes", "watch", "Leopards", "car_side", "grand_piano", "ketch", "chair")
KINDS = ("flat", "flat-wide", "super-sub")
STREAM = ("sticky", "per-image", "batched", "topk", "superclass")
FILES = ("per-image", "batched", "topk")


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    if not os.path.isdir(CALTECH):
        pytest.skip("Caltech-101 is not in ../shared/datasets (the photos this test classifies)")
    d = tmp_path_factory.mktemp("photos")
    for n, c in enumerate(CLASSES):
        for f in sorted(glob.glob(os.path.join(CALTECH, c, "*.jpg")))[:2]:
            shutil.copy(f, str(d / "{:02d}_{}_{}".format(n, c, os.path.basename(f))))
    return str(d)


def _verdict_command(run, kind):
    """The command the verdict prints when flat control *kind* wins (`edgetool evaluate`, `demo`)."""
    import numpy as np

    from edgetool.toolchain.evaluate import verdict

    wins = {"flat_budget": 0.9, "flat_wide": 0.1} if kind == "flat" else {"flat_budget": 0.1, "flat_wide": 0.9}
    right, wrong = np.ones(20, bool), np.zeros(20, bool)
    v = verdict.decide([wrong], {"flat_budget": [right], "flat_wide": [right]}, wins, run)
    return re.search(r"ship it with `([^`]+)`", v["message"]).group(1)


@pytest.fixture(scope="module")
def bundles(tmp_path_factory):
    """The three bundles of one cheap run (every network and both flat controls in well under a minute of
    training): the flat ones exported by running the verdict's printed command as printed, the Super-Sub
    one by `edgetool export RUN --out BUNDLE`."""
    pytest.importorskip("torch")
    from edgetool.toolchain.train.run import Run, TrainConfig

    cfg = TrainConfig(
        epochs=1, base_epochs=1, ft_epochs=1, qat_epochs=1, limit_train=192, limit_test=64, batch=64, seed=1,
        calib_batches=2,
    )  # fmt: skip
    path = str(tmp_path_factory.mktemp("run") / "run")
    Run.open(path, cfg, progress=False).train_all(with_vanilla=False)
    out = {"super-sub": path + "-super-sub"}
    proc = run_cli("export", path, "--out", out["super-sub"])
    assert proc.returncode == 0, proc.stderr
    for kind in ("flat", "flat-wide"):
        argv = shlex.split(_verdict_command(path, kind))
        assert argv[:2] == ["edgetool", "export"]
        proc = run_cli(*argv[1:])
        assert proc.returncode == 0, proc.stderr
        out[kind] = path + "-" + kind  # where the printed command writes it
        assert json.load(open(os.path.join(out[kind], "manifest.json")))["model"]["kind"] == "flat"
    return out


def _json_lines(proc):
    assert proc.returncode == 0, proc.stderr
    return [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]


def _classify(bundle, folder, policy):
    rows = _json_lines(run_cli("classify", bundle, folder, "--json", "--policy", policy))
    return [(r["superclass"], r["class"]) for r in rows]


def _stream(command, target, folder, policy, *extra):
    """(labels, scene-cut flags, summary) of `edgetool camera|serve` on the photo folder."""
    rows = _json_lines(run_cli(command, target, folder, "--headless", "--json", "--policy", policy, *extra))
    frames = [r for r in rows if r["type"] == "frame"]
    return [(r["superclass"], r["class"]) for r in frames], [r["scene_cut"] for r in frames], rows[-1]


def _deploy_root(bundle, root):
    """A deploy root serving *bundle*, installed through the device-side commands, no SSH."""
    assert run_cli("target", "config", root, "--accept-unsigned").returncode == 0
    proc = run_cli("deploy", bundle, "--to", root, "--device-profile", "cpu")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return root


def _with_photo_samples(bundle, folder, dst):
    """A copy of *bundle* whose samples (what profile and doctor classify) are the photos, preprocessed
    as classify preprocesses them."""
    from edgetool.export.bundle import write_samples
    from edgetool.runtime.preprocess import folder_images, load_images

    shutil.copytree(bundle, dst)
    with open(os.path.join(dst, "manifest.json")) as f:
        m = json.load(f)
    m["samples"] = write_samples(dst, load_images(folder_images(folder), m["input"]))
    with open(os.path.join(dst, "manifest.json"), "w") as f:
        json.dump(m, f)
    return dst


def _profile(bundle, out, n):
    """profile's report, its batch the *n* samples once each."""
    proc = run_cli("profile", bundle, "--out", out, "--iterations", "1", "--warmup", "0", "--no-memory",
                   "--codecs", "zstd", "--threads", "1", "--batch", n)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    with open(os.path.join(out, "profile.json")) as f:
        return json.load(f)


def _doctor(bundle):
    proc = run_cli("doctor", bundle, "--json", "--refits", "1")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    checks = {c["check"]: c for c in json.loads(proc.stdout)}
    return {p: [tuple(x) for x in labels] for p, labels in checks.get("classify", {}).get("labels", {}).items()}


def _routed_from(ref, labels):
    """Whether each label's superclass is one the reference routed some image up to it to."""
    return all(s in {r[0] for r in ref[: i + 1]} for i, (s, _) in enumerate(labels))


class Cells:
    """The matrix's cells that differ from what they must give, each as one line."""

    def __init__(self):
        self.bad = []

    def check(self, where, got, want):
        at = [i for i, (g, w) in enumerate(zip(got, want)) if g != w]
        if len(got) != len(want):
            self.bad.append("{}: {} labels, want {}".format(where, len(got), len(want)))
        elif at:
            i = at[0]
            self.bad.append(
                "{}: {} of {} differ; #{}: {} (want {})".format(where, len(at), len(got), i, got[i], want[i])
            )


def _streams(cells, kind, targets, photos, ref, want):
    """camera and serve under every stream policy (sticky on Super-Sub: the frames routed afresh), and
    camera's sticky with every frame routed afresh."""
    flat, n = kind != "super-sub", len(ref)
    for command, target in targets:
        for policy in STREAM:
            labels, cuts, summary = _stream(command, target, photos, policy)
            where = "{} / {} {}".format(kind, command, policy)
            s = summary["settings"]  # a flat bundle has no routing: its settings say so, and what was asked
            shown = (s["policy"], s.get("requested_policy")) if flat else s["policy"]
            cells.check(where + " settings", [shown], [("flat", policy) if flat else policy])
            if policy != "sticky" or flat:
                cells.check(where, labels, want[policy])
                continue
            routed = [i for i in range(n) if i == 0 or cuts[i]]  # a fresh superclass pass: the reference label
            cells.check(where + " (first frame, scene cuts)", [labels[i] for i in routed], [ref[i] for i in routed])
            assert len(routed) > n // 2, cuts  # unrelated photos: most frames are scene cuts
    for extra in (("--scene-cut", "0.001"), ("--interval", "1", "--enter", "0")):
        labels, cuts, _ = _stream("camera", targets[0][1], photos, "sticky", *extra)
        if extra[0] == "--scene-cut":
            assert cuts == [False] + [True] * (n - 1), cuts
        cells.check("{} / camera sticky {}".format(kind, " ".join(extra)), labels, ref)


def _profiled(cells, kind, report, ref, want):
    rows = report["end_to_end"]
    if kind != "super-sub":  # one network: measured once, as flat, not once per policy it does not have
        cells.check(kind + " / profile rows", [(m, list(p)) for m, p in rows.items()], [("one-engine", ["flat"])])
        got = rows.get("one-engine", {}).get("flat", {}).get("predictions", [])
        cells.check(kind + " / profile flat", [tuple(x) for x in got], ref)
        return
    for mode, by_policy in rows.items():
        for policy, row in by_policy.items():
            got = [tuple(x) for x in row.get("predictions", [])]
            where = "{} / profile {} {}".format(kind, mode, policy)
            if policy == "sticky":  # the first image routed; every later one by a superclass routed before
                cells.check(where, [bool(got) and got[0] == ref[0] and _routed_from(ref, got)], [True])
            else:
                cells.check(where, got, want[policy])


def test_every_device_command_under_every_policy_labels_as_classify(bundles, photos, tmp_path):
    cells = Cells()
    for kind in KINDS:
        bundle = bundles[kind]
        ref = _classify(bundle, photos, "per-image")
        assert len(ref) == 2 * len(CLASSES) and len(set(ref)) > 1, ref  # labels that can differ
        topk = ref if kind != "super-sub" else _classify(bundle, photos, "topk")
        want = {
            "per-image": ref,
            "batched": ref,
            "topk": topk,
            "superclass": [(s, None) for s, _ in ref],
            "sticky": ref,
        }
        for policy in FILES:
            cells.check("{} / classify {}".format(kind, policy), _classify(bundle, photos, policy), want[policy])
        root = _deploy_root(bundle, str(tmp_path / ("root-" + kind)))
        _streams(cells, kind, (("camera", bundle), ("serve", root)), photos, ref, want)
        sampled = _with_photo_samples(bundle, photos, str(tmp_path / ("samples-" + kind)))
        _profiled(cells, kind, _profile(sampled, str(tmp_path / ("profile-" + kind)), len(ref)), ref, want)
        labels = _doctor(sampled)
        for policy in FILES:
            cells.check("{} / doctor {}".format(kind, policy), labels.get(policy, []), want[policy])
    assert not cells.bad, "\n".join(cells.bad)
