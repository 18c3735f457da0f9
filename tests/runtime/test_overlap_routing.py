"""Overlapping clusters and gated top-k routing on a real bundle, through ONNX Runtime sessions.

The bundle holds the tiny run's networks under a hierarchy in which "other" also serves
"Shirt" (primary in "tops"): the manifest carries the overlap, the runtime reads it, and the
gated top-k policy follows equation 2 (p_super x p_sub, best over the tried superclasses).
"""

import json

import numpy as np
import pytest

pytest.importorskip("onnxruntime")
pytest.importorskip("torch")

from edgetool.runtime.backends.ort import OrtBackend  # noqa: E402
from edgetool.runtime.bundle.reader import Bundle  # noqa: E402
from edgetool.runtime.classifier import SuperSubClassifier  # noqa: E402
from edgetool.runtime.errors import BundleError  # noqa: E402


@pytest.fixture(scope="module")
def overlap_bundle(tiny_run, tmp_path_factory):
    from edgetool.export.bundle import write_bundle
    from edgetool.toolchain.hierarchy.spec import from_dict

    d = tiny_run.hier.to_dict()
    other = next(s for s in d["superclasses"] if s["name"] == "other")
    other["subclasses"].append("Shirt")
    other["overlap"] = ["Shirt"]
    hier = from_dict(d)
    assert hier.head_width == tiny_run.hier.head_width  # 4: the shared class fits the same head
    out = str(tmp_path_factory.mktemp("overlap") / "bundle")
    subs = [tiny_run.sub_qat(k) for k in range(hier.n_super)]
    write_bundle(out, tiny_run.super_qat(), subs, hier, tiny_run.input_spec, samples=tiny_run.samples())
    return out


def reference(clf, x, gate, k):
    """Equation 2 with the gate, from the classifier's own per-network probabilities."""
    ps = clf.superclass_probs(x)
    qs = [clf.subclass_probs(x, c) for c in range(clf.n_super)]
    out, passes = [], 0
    for i in range(len(x)):
        order = np.argsort(-ps[i])
        cands = [int(order[0])] if ps[i, order[0]] >= gate else [int(c) for c in order[:k]]
        passes += len(cands)
        best = max(cands, key=lambda c: ps[i, c] * qs[c][i].max())
        out.append((best, clf.bundle.superclasses[best].subclasses[int(qs[best][i].argmax())]))
    return out, passes


def test_manifest_carries_overlap_and_the_runtime_serves_it(overlap_bundle, tiny_run):
    x = tiny_run.xte.numpy()[:120]
    with Bundle.open(overlap_bundle) as b, OrtBackend(b) as be:
        other = next(s for s in b.superclasses if s.name == "other")
        assert other.subclasses[-1] == "Shirt" and other.overlap == ["Shirt"]
        assert [s.overlap for s in b.superclasses if s.name != "other"] == [[], []]
        probe = SuperSubClassifier(be, policy="per-image")
        gates = np.sort(probe.superclass_probs(x).max(1))
        gate = float(gates[len(gates) // 3])  # about a third of the images take a second route
        want, want_passes = reference(probe, x, gate, 2)
        clf = SuperSubClassifier(be, policy="topk", gate=gate, k=2)
        preds = clf.classify(x)
        assert [(p.superclass, p.label) for p in preds] == want
        assert clf.passes == want_passes and clf.images == len(x)
        assert 0.2 < clf.extra_passes_per_image < 0.5
        for p in preds:
            assert p.confidence == pytest.approx(p.p_super * p.p_sub)
        # gate 0: never a second route, identical to the paper's per-image policy
        never = SuperSubClassifier(be, policy="topk", gate=0.0, k=2)
        pi = SuperSubClassifier(be, policy="per-image")
        assert [p.to_dict() for p in never.classify(x)] == [p.to_dict() for p in pi.classify(x)]
        assert never.extra_passes_per_image == 0.0
        # gate above 1: every image tries k superclasses
        always = SuperSubClassifier(be, policy="topk", gate=1.01, k=3)
        always.classify(x[:10])
        assert always.extra_passes_per_image == 2.0


def test_old_bundles_without_overlap_read_as_before(tiny_bundle):
    with Bundle.open(tiny_bundle) as b:
        assert all(s.overlap == [] for s in b.superclasses)
        assert "overlap" not in json.dumps(b.manifest["hierarchy"])


@pytest.mark.parametrize(
    "overlap, message",
    [(["Bag"], "not one of the superclass"), (["Trouser"], "primary superclass"), ("Shirt", "overlap")],
)
def test_bad_overlap_in_a_manifest_is_refused(overlap_bundle, tmp_path, overlap, message):
    import shutil

    dst = tmp_path / "b"
    shutil.copytree(overlap_bundle, dst)
    m = json.loads((dst / "manifest.json").read_text())
    for s in m["hierarchy"]["superclasses"]:
        if s["name"] == "other":
            s["overlap"] = overlap
            if overlap == ["Bag"]:
                s["subclasses"].remove("Bag")
                s["subclasses"].append("Coat")
    (dst / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(BundleError, match=message):
        Bundle.open(str(dst))
