"""Bundle writer: base.onnx, one packed delta per subclass network, manifest with sha256s."""

from __future__ import annotations

import io
import json
import os
import time
from typing import Optional, Sequence

import numpy as np

from edgetool import __version__
from edgetool.runtime.bundle import codecs
from edgetool.runtime.bundle import manifest as M
from edgetool.runtime.bundle.reader import MANIFEST, SCHEMA
from edgetool.runtime.errors import UsageError
from edgetool.runtime.files import slug, write_json_atomic
from edgetool.runtime.bundle.names import FieldError
from edgetool.runtime.bundle.weights import PackedLayout, sha256_bytes

from .atomic import fault_point, staged_dir, write_archive
from .onnx_export import from_qatnet


def refit_layout(net) -> PackedLayout:
    """The packed layout of a QATNet's refittable tensors, in op order (each op's registry entry
    names its own: ``net.refit_specs()``)."""
    return PackedLayout.build(net.refit_specs())


def packed(layout: PackedLayout, net) -> np.ndarray:
    arrays = dict(net.int8_codes())
    arrays.update(net.float_tensors())
    return layout.pack(arrays)


def check_frozen_scales(base, sub, name: str) -> None:
    bs, ss = base.weight_scales(), sub.weight_scales()
    for k in bs:
        if not np.array_equal(bs[k], ss[k]):
            raise UsageError(
                "subclass network {!r}: weight scales of {} differ from the base; "
                "deltas need the superclass network's frozen scales".format(name, k)
            )
    if base.act_scales() != sub.act_scales():
        raise UsageError("subclass network {!r}: activation scales differ from the base".format(name))


def write_bundle(
    out_dir: str,
    base_net,
    sub_nets: Sequence,
    hierarchy,
    input_spec: dict,
    codec: str = "zstd",
    samples: Optional[np.ndarray] = None,
    extra: Optional[dict] = None,
    force: bool = False,
    flat_classes: Optional[Sequence[str]] = None,
    release: Optional[int] = None,
    training: Optional[dict] = None,
    backbone: Optional[dict] = None,
    specialists: Optional[Sequence[str]] = None,
) -> dict:
    """Write a bundle directory atomically (see :mod:`.atomic`) and return its manifest.

    With *flat_classes* (the head's classes in order), *base_net* is one flat network over every
    class: a ``flat`` bundle.  It keeps the format (hierarchy, one delta per superclass, all zero),
    so every device tool reads it; the classifier runs the base network alone and names each
    class's superclass from the hierarchy.

    *release*: the manifest's release number, which devices never let fall (default: the export's
    time in seconds since 1970, so a later export has a higher one).  *training*: how the networks
    were trained, as the manifest's ``training`` records it (``{"delta_budget": {...}}``).
    *backbone*: a pretrained backbone's name, weights and trunk split (``model.backbone``).
    *specialists*: a flat bundle's superclasses whose network in *sub_nets* is a specialist
    (``model.specialists``); the others' must be *base_net* itself (a zero delta)."""
    codecs.check_codec(codec)
    release = int(time.time()) if release is None else int(release)
    if not 0 <= release <= M.MAX_RELEASE:
        raise UsageError("--release must be between 0 and {}, got {}".format(M.MAX_RELEASE, release))
    if len(sub_nets) != hierarchy.n_super:
        raise UsageError("{} subclass networks for {} superclasses".format(len(sub_nets), hierarchy.n_super))
    for name, net in zip(hierarchy.superclasses, sub_nets):
        check_frozen_scales(base_net, net, name)
    with staged_dir(out_dir, force) as tmp:
        manifest = _write_files(tmp, base_net, sub_nets, hierarchy, input_spec, codec, samples, flat_classes)
        if backbone:
            manifest["model"]["backbone"] = dict(backbone)
        if specialists:
            manifest["model"]["specialists"] = list(specialists)
        manifest["release"] = release
        if training:
            manifest["training"] = dict(training)
        if extra:
            manifest.update(extra)
        try:  # the reader's own checks, before anything is published
            M.parse(json.loads(json.dumps(manifest)))
        except FieldError as exc:
            raise UsageError("cannot write a valid bundle: {}".format(exc)) from None
        write_manifest(tmp, manifest)
        fault_point("export:after-manifest")
    return manifest


def _write(folder: str, rel: str, data: bytes) -> None:
    with open(os.path.join(folder, rel), "wb") as f:
        f.write(data)
    fault_point("export:file")


def _write_files(out_dir, base_net, sub_nets, hierarchy, input_spec, codec, samples, flat_classes=None) -> dict:
    os.makedirs(os.path.join(out_dir, "deltas"))
    head = len(flat_classes) if flat_classes is not None else hierarchy.head_width
    not_mine = hierarchy.not_mine and flat_classes is None
    base_bytes = from_qatnet(base_net, input_spec["shape"], head, refit_inputs=True).SerializeToString()
    _write(out_dir, "base.onnx", base_bytes)
    layout = refit_layout(base_net)
    base_buf = packed(layout, base_net)
    deltas, changed = [], set()
    for k, (name, net) in enumerate(zip(hierarchy.superclasses, sub_nets)):
        d = layout.make_delta(base_buf, packed(layout, net))
        changed.update(layout.changed_tensors([d]))
        raw = d.tobytes()
        data = codecs.encode(codec, raw)
        rel = "deltas/{}.{}".format(slug(name), codecs.EXTENSIONS[codec])
        _write(out_dir, rel, data)
        deltas.append(
            {
                "superclass": name,
                "index": k,
                "file": rel,
                "codec": codec,
                "raw_size": len(raw),
                "stored_size": len(data),
                "sha256": sha256_bytes(data),
                "raw_sha256": sha256_bytes(raw),
                "changed_int8": int(np.count_nonzero(d[: layout.int8_nbytes])),
            }
        )
    manifest = {
        "schema": SCHEMA,
        "toolchain_version": __version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "hierarchy": hierarchy.to_dict(),
        "head_width": head,
        "model": {"kind": "super-sub"} if flat_classes is None else {"kind": "flat", "classes": list(flat_classes)},
        **({"not_mine": True} if not_mine else {}),
        "input": dict(input_spec),
        "output": {"name": "logits", "shape": ["N", head]},
        "quantization": {
            "weights": "int8 per-channel symmetric, axis 0, codes [-127,127], zero-point 0",
            "activations": "int8 per-tensor symmetric, codes [-128,127], zero-point 0",
            "activation_scales": base_net.act_scales(),
        },
        "base": {
            "file": "base.onnx",
            "size": len(base_bytes),
            "sha256": sha256_bytes(base_bytes),
            "opset": 13,
            "int8_weight_bytes": int(sum(t.nbytes for t in layout.tensors if t.dtype == "int8")),
        },
        # the refit set: the tensors some delta changes, all an engine refits (runtime.bundle.refit_set)
        "refit": dict(layout.to_dict(), changed=[t.name for t in layout.tensors if t.name in changed]),
        "deltas": deltas,
        "engines": [],
    }
    if samples is not None:
        manifest["samples"] = write_samples(out_dir, samples)
    return manifest


def write_samples(out_dir: str, samples: np.ndarray) -> dict:
    """samples.npy (float32, no pickle) and its manifest entry."""
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(samples, dtype=np.float32), allow_pickle=False)
    data = buf.getvalue()
    with open(os.path.join(out_dir, "samples.npy"), "wb") as f:
        f.write(data)
    return {"file": "samples.npy", "size": len(data), "sha256": sha256_bytes(data), "shape": list(samples.shape)}


def write_manifest(out_dir: str, manifest: dict) -> None:
    write_json_atomic(os.path.join(out_dir, MANIFEST), manifest)


def archive(bundle_dir: str, path: str, force: bool = False) -> str:
    """One .tar.gz of the bundle directory (what ``edgetool deploy`` ships), written atomically."""
    return write_archive(bundle_dir, path, force)
