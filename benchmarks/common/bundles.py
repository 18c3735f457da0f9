"""Bundles of growing networks for the scaling benchmark, through the toolchain's export path.

Each bundle is a real edgetool bundle: a toolchain ResNet (random weights, BatchNorm
statistics from random calibration inputs), converted to a QAT network, exported by
``edgetool.export.bundle.write_bundle``.  Its subclass networks are the base network with a
chosen fraction of int8 codes moved by a small step (+-1..3 codes, as QAT fine-tunes move
them) and BatchNorm scale/bias perturbed, so the delta density is set exactly.
"""

from __future__ import annotations

import copy
import os

import numpy as np

# name: (toolchain arch, input shape)
ARCHS = {
    "resnet8": ("resnet8", [3, 32, 32]),
    "resnet18": ("resnet18", [3, 64, 64]),
    "resnet50": ("resnet50", [3, 64, 64]),
}
SUPERCLASSES = 3


def _hierarchy():
    from edgetool.toolchain.hierarchy.spec import Hierarchy

    names = ["s{}".format(i) for i in range(SUPERCLASSES)]
    subs = [["s{}c{}".format(i, j) for j in range(4)] for i in range(SUPERCLASSES)]
    return Hierarchy(names, subs)


def base_network(arch: str, shape, head: int, seed: int):
    import torch

    from edgetool.toolchain.train import models, qat

    torch.manual_seed(seed)
    model = models.build(arch, shape[0], head)
    model.train()
    with torch.no_grad():  # BatchNorm running statistics from random inputs
        for _ in range(3):
            model(torch.randn(8, *shape))
    model.eval()
    net = qat.from_float(model, [torch.randn(4, *shape)])
    _snap_to_codes(net)
    return net


def _snap_to_codes(net) -> None:
    """Make every weight exactly code x scale, so moving a code by k moves the weight by k x scale."""
    import torch

    with torch.no_grad():
        codes = net.int8_codes()
        for layer in net.layers:
            s = net.wscale(layer).reshape([-1] + [1] * (codes[layer + ".weight"].ndim - 1))
            net.weight(layer + ".weight").copy_(torch.from_numpy(codes[layer + ".weight"].astype(np.float32)) * s)


def subclass_network(base, fraction: float, rng: np.random.Generator):
    """The base with *fraction* of its int8 codes moved by 1..3 steps and BatchNorm nudged."""
    import torch

    from edgetool.toolchain.train.qat import W_QMAX, W_QMIN, param_key

    net = copy.deepcopy(base)
    codes = base.int8_codes()
    with torch.no_grad():
        for layer in net.layers:
            q = codes[layer + ".weight"].astype(np.int16)
            moved = rng.random(q.shape) < fraction
            step = rng.choice(
                np.array([-3, -2, -1, 1, 2, 3], dtype=np.int16), size=q.shape, p=[0.05, 0.15, 0.3, 0.3, 0.15, 0.05]
            )
            new = q + np.where(moved, step, 0)
            out_of_range = (new > W_QMAX) | (new < W_QMIN)
            new = np.where(out_of_range, q - np.where(moved, step, 0), new)  # step the other way at the edge
            s = net.wscale(layer).reshape([-1] + [1] * (q.ndim - 1))
            net.weight(layer + ".weight").copy_(torch.from_numpy(new.astype(np.float32)) * s)
        for op in net.ops:
            if op["op"] == "conv":
                bn = net.bns[param_key(op["name"])]
                bn.weight.mul_(1 + 0.01 * torch.from_numpy(rng.standard_normal(bn.weight.shape).astype(np.float32)))
                bn.bias.add_(0.01 * torch.from_numpy(rng.standard_normal(bn.bias.shape).astype(np.float32)))
    return net


def build(out_dir: str, name: str, fraction: float, codec: str = "zstd", seed: int = 0) -> str:
    """Write (or reuse) the bundle of network *name* with *fraction* of codes changed per delta."""
    import torch

    from edgetool.export.bundle import write_bundle

    if os.path.isfile(os.path.join(out_dir, "manifest.json")):
        return out_dir
    arch, shape = ARCHS[name]
    hier = _hierarchy()
    base = base_network(arch, shape, hier.head_width, seed)
    rng = np.random.default_rng(seed)
    subs = [subclass_network(base, fraction, rng) for _ in range(hier.n_super)]
    spec = {
        "name": "input",
        "shape": list(shape),
        "layout": "NCHW",
        "dtype": "float32",
        "scale": 1.0 / 255.0,
        "mean": [0.5] * shape[0],
        "std": [0.25] * shape[0],
        "color": "rgb",
        "classes": [c for s in hier.subclasses for c in s],
    }
    samples = torch.randn(8, *shape).numpy()
    tmp = "{}.tmp{}".format(out_dir.rstrip("/"), os.getpid())
    write_bundle(
        tmp,
        base,
        subs,
        hier,
        spec,
        codec=codec,
        samples=samples,
        extra={"synthetic": {"arch": arch, "changed_fraction": fraction, "seed": seed}},
    )
    _publish(tmp, out_dir)
    return out_dir


def _publish(tmp: str, out_dir: str) -> None:
    """Rename the finished bundle into place; if another builder got there first, keep theirs."""
    import shutil

    try:
        os.replace(tmp, out_dir)
    except OSError:
        if not os.path.isfile(os.path.join(out_dir, "manifest.json")):
            raise
        shutil.rmtree(tmp)


def transcode(src: str, dst: str, codec: str) -> str:
    """A copy of bundle *src* with every delta re-encoded by *codec* (same networks, exactly)."""
    import json
    import shutil

    from edgetool.export.bundle import slug, write_manifest
    from edgetool.runtime.bundle import codecs
    from edgetool.runtime.bundle.reader import Bundle
    from edgetool.runtime.bundle.weights import sha256_bytes

    if os.path.isfile(os.path.join(dst, "manifest.json")):
        return dst
    b = Bundle.open(src)
    tmp = "{}.tmp{}".format(dst.rstrip("/"), os.getpid())
    os.makedirs(os.path.join(tmp, "deltas"))
    for name in ("base.onnx", "samples.npy"):
        shutil.copyfile(os.path.join(src, name), os.path.join(tmp, name))
    manifest = json.loads(json.dumps(b.manifest))
    for k, entry in enumerate(manifest["deltas"]):
        data = codecs.encode(codec, b.read_delta(k).tobytes())
        rel = "deltas/{}.{}".format(slug(entry["superclass"]), codecs.EXTENSIONS[codec])
        with open(os.path.join(tmp, rel), "wb") as f:
            f.write(data)
        entry.update(file=rel, codec=codec, stored_size=len(data), sha256=sha256_bytes(data))
    write_manifest(tmp, manifest)
    _publish(tmp, dst)
    return dst
