"""Measurements of one bundle on one backend: a switch broken into stages, inference,
end-to-end latency per routing policy and engine mode, throughput, and the comparison
points (cold load of a full network, the single base network, vanilla's N+1 sessions).

Every figure is a list of wall-clock milliseconds reduced by :func:`.stats.stat`.
"""

from __future__ import annotations

import os
import time
from typing import Any, Dict, List

import numpy as np

from ..bundle import codecs
from ..backends.base import BASE
from ..classifier import POLICIES, SuperSubClassifier
from ..bundle.sparse_codec import SparseDelta
from ..bundle.packed import PackedWeights
from ..bundle.weights import sha256_bytes
from .stats import StageClock, stat, timed
from .vanilla import PlainSessions, base_buffer

NOT_HERE = "not a stage of this backend (ONNX Runtime on the CPU reads the weights from host memory)"


def _read(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def switch_stages(bundle, backend, iterations: int, warmup: int) -> Dict[str, dict]:
    """Each stage of a switch from the base network, measured on every delta of the bundle in turn.

    The stages are the backend's: decode keeps a sparse delta sparse (gaps and values)
    and the add scatters it into the base in place; ``sha256_decoded`` (paid by the first
    switch to each delta only) hashes the delta's dense form."""
    n = bundle.num_superclasses
    clock = StageClock()
    weights = PackedWeights(bundle.layout, base_buffer(bundle))
    for it in range(warmup + iterations):
        record = it >= warmup
        for k in range(n):
            entry = bundle.deltas[k]
            path = os.path.join(bundle.root, entry["file"])
            weights.set(None)
            t = [time.perf_counter()]
            data = _read(path)
            t.append(time.perf_counter())
            sha256_bytes(data)
            t.append(time.perf_counter())
            delta = codecs.decode_delta(entry["codec"], data, int(entry["raw_size"]))
            t.append(time.perf_counter())
            sha256_bytes(delta.dense() if isinstance(delta, SparseDelta) else delta)
            t.append(time.perf_counter())
            weights.set(delta)
            t.append(time.perf_counter())
            if record:
                names = ("delta_read", "sha256", "decode_" + entry["codec"], "sha256_decoded", "add")
                for name, a, b in zip(names, t, t[1:]):
                    clock.add(name, (b - a) * 1e3)
    out = clock.summary()
    out.update(switch_totals(backend, n, iterations, warmup))
    return out


def switch_totals(backend, n: int, iterations: int, warmup: int) -> Dict[str, dict]:
    """Whole switches through the backend, as a routed image pays them (after the first,
    verified switch to each delta), with the backend's own stage timings."""
    for _ in range(warmup):
        for k in range(n):
            backend.switch(k, force=True)
            backend.switch(BASE, force=True)
    backend.timings.clear()
    to_sub: List[float] = []
    to_base: List[float] = []
    for _ in range(iterations):
        for k in range(n):
            t0 = time.perf_counter()
            backend.switch(k, force=True)
            t1 = time.perf_counter()
            backend.switch(BASE, force=True)
            to_sub.append((t1 - t0) * 1e3)
            to_base.append((time.perf_counter() - t1) * 1e3)
    s = backend.timings.samples
    out = {"switch_to_subclass": stat(to_sub), "switch_to_base": stat(to_base), "apply": stat(s.get("apply", [])[0::2])}
    for name in ("h2d_kernel", "refit"):
        out[name] = stat(s[name][0::2]) if s.get(name) else {"count": 0, "reason": NOT_HERE}
    return out


def inference(backend, x: np.ndarray, iterations: int, warmup: int) -> Dict[str, dict]:
    """Superclass (base) and subclass network inference on one batch; a flat bundle's one network's."""
    backend.switch(BASE)
    if backend.bundle.kind == "flat":
        return {"inference": stat(timed(lambda: backend.infer(x), iterations, warmup))}
    sup = timed(lambda: backend.infer(x), iterations, warmup)
    backend.switch(0)
    sub = timed(lambda: backend.infer(x), iterations, warmup)
    backend.switch(BASE)
    return {"superclass_inference": stat(sup), "subclass_inference": stat(sub)}


def end_to_end(backend, images: np.ndarray, iterations: int, warmup: int, policies=POLICIES) -> Dict[str, dict]:
    """Milliseconds per image, images per second and the predictions of the last pass, per routing
    policy; a flat bundle has no routing and is measured once, as ``flat``.

    per-image, sticky and topk classify one image per call (a camera's view); batched
    classifies the whole set per call and each image is charged its share.  ``predictions``
    are [superclass, class] per image, as ``classify --json`` names them."""
    rows = [("flat", "per-image")] if backend.bundle.kind == "flat" else [(p, p) for p in policies]
    out = {}
    for name, policy in rows:
        clf = SuperSubClassifier(backend, policy=policy)
        preds: List[Any] = []
        if policy == "batched":

            def whole_set(clf=clf):
                preds[:] = clf.classify(images)

            ms = timed(whole_set, iterations, warmup)
            per_image = [m / len(images) for m in ms]
        else:
            per_image = []
            for it in range(warmup + iterations):
                clf.reset()
                preds.clear()
                for i in range(len(images)):
                    t0 = time.perf_counter()
                    preds.extend(clf.classify(images[i : i + 1]))
                    if it >= warmup:
                        per_image.append((time.perf_counter() - t0) * 1e3)
        s = stat(per_image)
        out[name] = {
            "per_image_ms": s,
            "images_per_s": 1e3 / float(s["mean"]),  # type: ignore[arg-type]
            "predictions": [[p.superclass_name, p.label] for p in preds],
        }
    backend.switch(BASE)
    return out


def codec_compare(bundle, names, iterations: int) -> Dict[str, dict]:
    """Each codec on the bundle's first delta: stored bytes and decode time, decoded as a switch
    decodes it (a sparse delta stays sparse)."""
    raw = bundle.read_delta(0).tobytes()
    out = {}
    for name in names:
        data = codecs.encode(name, raw)
        out[name] = {
            "stored_bytes": len(data),
            "raw_bytes": len(raw),
            "decode_ms": stat(timed(lambda: codecs.decode_delta(name, data, len(raw)), iterations, 1)),
        }
    return out


def cold_load(bundle, iterations: int, threads: int = 0) -> Dict[str, dict]:
    """A new session on a full subclass network (plain initializers) plus its first inference:
    what switching costs without deltas, when only one network fits.  A flat bundle's: its one
    network, what loading it costs."""
    x = sample_batch(bundle, 1)
    ms = []
    for it in range(iterations + 1):
        k = BASE if bundle.kind == "flat" else it % bundle.num_superclasses
        t0 = time.perf_counter()
        s = PlainSessions(bundle, [k], threads=threads)
        s.infer(k, x)
        if it:  # the first load also warms the file cache
            ms.append((time.perf_counter() - t0) * 1e3)
        s.close()
    return {"cold_load": stat(ms)}


def comparison(
    bundle, images: np.ndarray, batch: int, iterations: int, warmup: int, threads: int = 0
) -> Dict[str, dict]:
    """The single base network and vanilla's N+1 sessions, timed like the efficient form."""
    n = bundle.num_superclasses
    single = PlainSessions(bundle, [BASE], threads=threads)
    x1, xb = images[:1], sample_batch(bundle, batch)
    out: Dict[str, Any] = {"single_inference": stat(timed(lambda: single.infer(BASE, x1), iterations, warmup))}
    ms = timed(lambda: single.infer(BASE, xb), iterations, warmup)
    out["single_throughput_images_per_s"] = batch * 1e3 / float(np.mean(ms))
    single.close()
    vanilla = PlainSessions(bundle, [BASE] + list(range(n)), threads=threads)
    out["vanilla_per_image"] = stat(_vanilla_per_image(vanilla, images, iterations, warmup))
    vanilla.close()
    return out


def _vanilla_per_image(vanilla, images, iterations, warmup) -> List[float]:
    n = vanilla.bundle.num_superclasses
    per_image = []
    for it in range(warmup + iterations):
        for i in range(len(images)):
            t0 = time.perf_counter()
            k = int(np.argmax(vanilla.infer(BASE, images[i : i + 1])[0, :n]))
            vanilla.infer(k, images[i : i + 1])
            if it >= warmup:
                per_image.append((time.perf_counter() - t0) * 1e3)
    return per_image


def throughput(backend, bundle, batch: int, iterations: int, warmup: int) -> float:
    """Two-stage images per second at *batch*, superclass-batched routing (a flat bundle: its one network)."""
    clf = SuperSubClassifier(backend, policy="batched")
    xb = sample_batch(bundle, batch)
    ms = timed(lambda: clf.classify(xb), iterations, warmup)
    backend.switch(BASE)
    return batch * 1e3 / float(np.mean(ms))


def sample_batch(bundle, n: int) -> np.ndarray:
    """*n* inputs from the bundle's samples (repeated), or seeded noise where it has none."""
    x = bundle.samples()
    if x is None or not len(x):
        rng = np.random.default_rng(0)
        return rng.standard_normal([n] + list(bundle.input["shape"])).astype(np.float32)
    reps = (n + len(x) - 1) // len(x)
    return np.ascontiguousarray(np.concatenate([x] * reps)[:n], dtype=np.float32)
