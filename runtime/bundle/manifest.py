"""The bundle manifest, validated as a whole before anything else is read.

Why dataclasses with explicit checks, and not jsonschema or pydantic: the device side
must run on JetPack's Python 3.8 with nothing beyond numpy and the codecs, and most of
what matters here is *relations* between fields (the refit layout fits inside the
declared sizes, a delta decodes to exactly the layout, names are unique, the head is wide
enough for every superclass).  A schema language states field types well but not these;
one explicit pass states both, in one place, with messages that name the field.

:func:`parse` returns a :class:`Manifest` or raises :class:`ManifestError` (a
:class:`BundleError` on ``manifest.json``).  Every size it lets through is a
non-negative int under a cap derived from the manifest itself, so a reader can size its
reads and decompressions by it.
"""

# size-limit: every field of the manifest and every relation between fields is checked in this one pass
from __future__ import annotations

import dataclasses

import json
import re
from dataclasses import dataclass
from typing import List, Optional, Tuple

from .. import choices
from . import names as N
from . import routing as R
from .names import check, fail
from .weights import ALIGN, PackedLayout

SCHEMA = "edgetool.bundle/1"
MANIFEST = "manifest.json"
MAX_MANIFEST_BYTES = 16 << 20
MAX_FILE_BYTES = 2 << 30  # protobuf's own limit for base.onnx; engines and samples stay under it too
MAX_SAMPLES_BYTES = 64 << 20
MAX_SUPERCLASSES = 4096
MAX_TENSORS = 100000
MAX_DIM = 1 << 20
MAX_RELEASE = (1 << 53) - 1  # exact in every JSON reader
CODECS = choices.CODECS + ("raw",)  # raw: measurements only
_SHA = re.compile(r"\A[0-9a-f]{64}\Z")


@dataclass(frozen=True)
class FileEntry:
    file: str
    size: int
    sha256: str


@dataclass(frozen=True)
class Delta(FileEntry):
    index: int
    superclass: str
    codec: str
    raw_size: int
    raw_sha256: Optional[str]


@dataclass(frozen=True)
class Manifest:
    raw: dict
    superclasses: Tuple[Tuple[str, Tuple[str, ...]], ...]
    head_width: int
    input_shape: Tuple[int, int, int]
    output_name: str
    layout: PackedLayout
    base: FileEntry
    deltas: Tuple[Delta, ...]
    samples: Optional[FileEntry]
    samples_shape: Optional[Tuple[int, ...]]
    engines: Tuple[FileEntry, ...]
    # per superclass: the subclasses it shares with another superclass, where they are primary
    overlap: Tuple[Tuple[str, ...], ...] = ()
    routing: Optional[R.Routing] = None  # gated top-k settings chosen at export (runtime.routing)
    not_mine: bool = False  # each subclass network's head has one more row after its classes: "not mine"
    kind: str = "super-sub"  # or "flat": base.onnx is one network over every class, the deltas are zero
    flat_classes: Tuple[str, ...] = ()  # a flat bundle's classes, in head order
    release: int = 0  # only grows from one export to the next; devices refuse an older one (anti-rollback)
    # refit.changed: the packed tensors some delta changes, in layout order (None: an older bundle, not recorded)
    changed: Optional[Tuple[str, ...]] = None
    # training.delta_budget: (mode, value, text) of the budget the deltas were trained under (None: not recorded)
    delta_budget: Optional[Tuple[str, float, str]] = None
    # model.backbone: (architecture, the weights it started from, the part after which the trunk is split or None)
    backbone: Optional[Tuple[str, str, Optional[str]]] = None
    # model.specialists: a flat bundle's superclasses whose delta is a specialist (the others route to the base)
    specialists: Tuple[int, ...] = ()
    # model.backbone.trunk_output: the tensor of base.onnx where the frozen trunk ends (None: not recorded)
    trunk_output: Optional[str] = None

    def files(self) -> List[FileEntry]:
        out = [self.base] + list(self.deltas)
        if self.samples is not None:
            out.append(self.samples)
        return out + list(self.engines)

    def declared_bytes(self) -> int:
        """Every byte the bundle declares (files and manifest cap): the budget of an unpack."""
        return sum(f.size for f in self.files())


class ManifestError(Exception):
    """manifest.json is not a JSON object of this schema (field errors raise :class:`names.FieldError`)."""


def loads(data: bytes) -> dict:
    if len(data) > MAX_MANIFEST_BYTES:
        raise ManifestError("{} bytes, more than the {} allowed".format(len(data), MAX_MANIFEST_BYTES))
    try:
        d = json.loads(data.decode("utf-8"), parse_constant=_no_constant)
    except RecursionError:
        raise ManifestError("not valid JSON (nested too deeply)") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise ManifestError("not valid JSON ({})".format(exc)) from None
    if not isinstance(d, dict) or d.get("schema") != SCHEMA:
        raise ManifestError(
            "unknown schema {!r}; this edgetool reads {!r}".format(
                N.shown(d.get("schema")) if isinstance(d, dict) else None, SCHEMA
            )
        )
    return d


def _no_constant(name):
    raise ValueError("{} is not a number".format(name))


def parse(d: dict) -> Manifest:
    """Check every field of a decoded manifest; return the typed model."""
    supers = _hierarchy(d)
    head = check(d.get("head_width"), "head_width", int, 1, MAX_DIM)
    not_mine = d.get("not_mine", False)
    if not isinstance(not_mine, bool):
        fail("not_mine", "{} is not true or false".format(N.shown(not_mine)))
    kind, flat_classes = _model(d, supers)
    if kind == "flat" and not_mine:
        fail("not_mine", 'a flat bundle has no "not mine" rows')
    need = max([len(supers)] + [len(s) + not_mine for _, s in supers] + [len(flat_classes)])
    if head < need:
        fail("head_width", "{} is less than the {} rows it must hold".format(head, need))
    shape = _input(d)
    output = check(d.get("output"), "output", dict)
    out_name = N.name(output.get("name"), "output.name")
    base = _file(check(d.get("base"), "base", dict), "base", MAX_FILE_BYTES)
    layout = _layout(check(d.get("refit"), "refit", dict), base.size, head)
    changed = _changed(d["refit"], layout)
    deltas = _deltas(check(d.get("deltas"), "deltas", list), supers, layout)
    samples, sshape = _samples(d.get("samples"), shape)
    engines = tuple(
        _file(check(e, "engines[{}]".format(i), dict), "engines[{}]".format(i), MAX_FILE_BYTES, "engines")
        for i, e in enumerate(check(d.get("engines", []), "engines", list))
    )
    over = _overlap(d, supers)
    routing = R.parse(d.get("routing"), len(supers), [len(s) for _, s in supers])
    files = (base, deltas, samples, sshape, engines)
    if kind == "flat" and (routing is not None or head != len(flat_classes)):
        fail("model", "a flat bundle's head holds exactly its classes, and it has no routing")
    release = check(d.get("release", 0), "release", int, 0, MAX_RELEASE)
    model = (d, supers, head, shape, out_name, layout)
    budget = _delta_budget(d)
    if kind == "flat" and budget is not None:
        fail("training.delta_budget", "a flat bundle has no deltas to train")
    backbone = _backbone(d)
    specialists = _specialists(d, supers, kind)
    m = Manifest(*model, *files, over, routing, not_mine, kind, flat_classes, release, changed, budget, backbone)
    trunk = d.get("model", {}).get("backbone", {}).get("trunk_output") if backbone else None
    if trunk is not None:
        trunk = N.name(trunk, "model.backbone.trunk_output", path=False)
    m = dataclasses.replace(m, specialists=specialists, trunk_output=trunk)
    paths = [f.file for f in m.files()]
    if len(set(paths)) != len(paths) or MANIFEST in paths:
        fail("files", "two entries name the same file")
    return m


KINDS = ("super-sub", "flat")


def _model(d, supers) -> Tuple[str, Tuple[str, ...]]:
    """The optional ``model`` field: {"kind": "super-sub"} (the default), or {"kind": "flat",
    "classes": [...]}: the head's classes in order, each one of the hierarchy's, all of them."""
    m = check(d.get("model", {"kind": "super-sub"}), "model", dict)
    kind = m.get("kind")
    if kind not in KINDS:
        fail("model.kind", "{!r} is not one of {}".format(N.shown(kind), ", ".join(KINDS)))
    if kind != "flat":
        return str(kind), ()
    raw = check(m.get("classes"), "model.classes", list)
    classes = [N.label(c, "model.classes[{}]".format(i)) for i, c in enumerate(raw)]
    N.unique(classes, "model.classes")
    if set(classes) != {c for _, subs in supers for c in subs}:
        fail("model.classes", "must name every class of the hierarchy, and nothing else")
    return "flat", tuple(classes)


def _backbone(d) -> Optional[Tuple[str, str, Optional[str]]]:
    """The optional ``model.backbone``: {"arch", "pretrained", "split_after"} of a network fine-tuned
    from a pretrained backbone (split_after: the last part of the frozen trunk, or null)."""
    b = d.get("model", {}).get("backbone")
    if b is None:
        return None
    check(b, "model.backbone", dict)
    arch = N.name(b.get("arch"), "model.backbone.arch")
    pretrained = N.printable(b.get("pretrained"), "model.backbone.pretrained", "name")
    split = b.get("split_after")
    if split is not None:
        split = N.name(split, "model.backbone.split_after", path=False)
    return arch, pretrained, split


def _specialists(d, supers, kind) -> Tuple[int, ...]:
    """The optional ``model.specialists``: the names of a flat bundle's superclasses whose delta turns
    the base into that superclass's specialist.  An image whose predicted class is in one of them is
    classified again by its specialist, among that superclass's classes; every other superclass's
    delta is zero and its images keep the base's answer."""
    raw = d.get("model", {}).get("specialists")
    if raw is None:
        return ()
    names = [N.label(n, "model.specialists[{}]".format(i)) for i, n in enumerate(check(raw, "model.specialists", list))]
    N.unique(names, "model.specialists")
    if kind != "flat":
        fail("model.specialists", "only a flat bundle (a base over every class) has specialists")
    index = {n: k for k, (n, _) in enumerate(supers)}
    for n in names:
        if n not in index:
            fail("model.specialists", "{!r} is not a superclass of the hierarchy".format(N.shown(n)))
    return tuple(sorted(index[n] for n in names))


def backbone_line(arch: str, weights: str, split: str) -> str:
    """How ``inspect`` shows a bundle's ``model.backbone``."""
    trunk = "trunk frozen up to {}".format(split) if split != "None" else "every layer trained"
    return "backbone    {} from {} weights; {}".format(arch, weights, trunk)


def flat_route(m: Manifest) -> List[Tuple[int, int]]:
    """A flat bundle's head rows as (superclass, index in it) of each class's primary superclass."""
    over = m.overlap or ((),) * len(m.superclasses)
    primary = {
        c: (k, j)
        for k, ((_, subs), o) in enumerate(zip(m.superclasses, over))
        for j, c in enumerate(subs)
        if c not in o
    }
    return [primary[c] for c in m.flat_classes]


def _overlap(d, supers) -> Tuple[Tuple[str, ...], ...]:
    """Optional ``overlap`` lists (a learned hierarchy with shared classes): each names members
    of its superclass that are primary in exactly one other superclass."""
    out = []
    for i, s in enumerate(d["hierarchy"]["superclasses"]):
        where = "hierarchy.superclasses[{}].overlap".format(i)
        o = check(s.get("overlap", []), where, list)
        o = [N.label(c, "{}[{}]".format(where, j)) for j, c in enumerate(o)]
        N.unique(o, where)
        if any(c not in supers[i][1] for c in o):
            fail(where, "names a class that is not one of the superclass's subclasses")
        out.append(tuple(o))
    for i, o in enumerate(out):
        for c in o:
            homes = [k for k, (_, subs) in enumerate(supers) if c in subs and c not in out[k]]
            if len(homes) != 1:
                fail(
                    "hierarchy.superclasses[{}].overlap".format(i), "class {!r} needs one primary superclass".format(c)
                )
    return tuple(out)


def _hierarchy(d) -> Tuple[Tuple[str, Tuple[str, ...]], ...]:
    h = check(d.get("hierarchy"), "hierarchy", dict)
    raw = check(h.get("superclasses"), "hierarchy.superclasses", list)
    if not 1 <= len(raw) <= MAX_SUPERCLASSES:
        fail("hierarchy.superclasses", "{} superclasses (1..{} allowed)".format(len(raw), MAX_SUPERCLASSES))
    out = []
    for i, s in enumerate(raw):
        where = "hierarchy.superclasses[{}]".format(i)
        s = check(s, where, dict)
        name = N.name(s.get("name"), where + ".name")
        subs = check(s.get("subclasses"), where + ".subclasses", list)
        if not subs:
            fail(where, "superclass {!r} has no subclasses".format(name))
        subs = [N.label(c, "{}.subclasses[{}]".format(where, j)) for j, c in enumerate(subs)]
        N.unique(subs, where + ".subclasses")
        out.append((name, tuple(subs)))
    N.unique([n for n, _ in out], "hierarchy.superclasses")
    return tuple(out)


def _input(d) -> Tuple[int, int, int]:
    spec = check(d.get("input"), "input", dict)
    shape = check(spec.get("shape"), "input.shape", list)
    if len(shape) != 3:
        fail("input.shape", "must be [C, H, W], got {} dims".format(len(shape)))
    c, h, w = (check(v, "input.shape[{}]".format(i), int, 1, 16384) for i, v in enumerate(shape))
    if c not in (1, 3):
        fail("input.shape", "{} channels; 1 (gray) or 3 (rgb) supported".format(c))
    if spec.get("layout", "NCHW") != "NCHW" or spec.get("dtype", "float32") != "float32":
        fail("input", "layout NCHW and dtype float32 are the only ones supported")
    if spec.get("color", "gray" if c == 1 else "rgb") != ("gray" if c == 1 else "rgb"):
        fail("input.color", "{!r} does not match {} channel(s)".format(N.shown(spec.get("color")), c))
    check(spec.get("scale", 1.0 / 255), "input.scale", float, 1e-12, 1e6)
    for key, lo in (("mean", -1e6), ("std", 1e-12)):
        vals = check(spec.get(key), "input." + key, list)
        if len(vals) != c:
            fail("input." + key, "{} values for {} channel(s)".format(len(vals), c))
        for i, v in enumerate(vals):
            check(v, "input.{}[{}]".format(key, i), float, lo, 1e6)
    N.name(spec.get("name", "input"), "input.name")
    _resize(spec, h, w)
    return (c, h, w)


def _resize(spec: dict, h: int, w: int) -> None:
    """``input.resize`` (:data:`..choices.RESIZE_MODES`; "squash" when absent) and ``input.crop``
    (in (0, 1], 1 when absent; only "shorter" crops, and it crops a square input)."""
    mode = spec.get("resize", "squash")
    if mode not in choices.RESIZE_MODES:
        fail("input.resize", "{} is not one of {}".format(N.shown(mode), ", ".join(choices.RESIZE_MODES)))
    crop = check(spec.get("crop", 1.0), "input.crop", float)
    if not 0.0 < crop <= 1.0:
        fail("input.crop", "{} is out of range: a fraction in (0, 1]".format(N.shown(spec.get("crop"))))
    if mode == "squash" and crop != 1.0:
        fail("input.crop", 'only input.resize "shorter" crops; "squash" resizes the whole image')
    if mode == "shorter" and h != w:
        fail("input.resize", '"shorter" centre-crops a square input; input.shape is {}x{}'.format(h, w))


def _file(e: dict, where: str, cap: int, folder: Optional[str] = None) -> FileEntry:
    path = N.relpath(e.get("file"), where + ".file", folder)
    size = check(e.get("stored_size", e.get("size")), where + ".size", int, 0, cap)
    sha = e.get("sha256")
    if not isinstance(sha, str) or not _SHA.match(sha):
        fail(where + ".sha256", "missing or not 64 lowercase hex digits")
    return FileEntry(path, size, str(sha))


def _layout(r: dict, base_size: int, head: int) -> PackedLayout:
    tensors = check(r.get("tensors"), "refit.tensors", list)
    if not 1 <= len(tensors) <= MAX_TENSORS:
        fail("refit.tensors", "{} tensors (1..{} allowed)".format(len(tensors), MAX_TENSORS))
    cap = base_size + ALIGN * (len(tensors) + 1)  # base.onnx stores every refit tensor's bytes once
    total = check(r.get("total_nbytes"), "refit.total_nbytes", int, ALIGN)
    if total > cap:
        fail(
            "refit.total_nbytes",
            "{} bytes of refit tensors cannot come from a {}-byte base.onnx".format(total, base_size),
        )
    check(r.get("int8_nbytes"), "refit.int8_nbytes", int, 0, total)
    for i, t in enumerate(tensors):
        where = "refit.tensors[{}]".format(i)
        t = check(t, where, dict)
        N.name(t.get("name"), where + ".name", path=False)
        dims = check(t.get("shape"), where + ".shape", list)
        if not 1 <= len(dims) <= 8:
            fail(where + ".shape", "{} dims (1..8 allowed)".format(len(dims)))
        for j, v in enumerate(dims):
            check(v, "{}.shape[{}]".format(where, j), int, 1, total)
        check(t.get("offset"), where + ".offset", int, 0, total)
        check(t.get("nbytes", 0), where + ".nbytes", int, 0, total)
        scale = t.get("scale")
        if scale is not None:
            for j, v in enumerate(check(scale, where + ".scale", list)):
                check(v, "{}.scale[{}]".format(where, j), float, 0.0, 1e30)
            if len(scale) != dims[0]:
                fail(where + ".scale", "{} scales for {} output channels".format(len(scale), dims[0]))
        check(t.get("axis", 0), where + ".axis", int, 0, 0)
    try:
        layout = PackedLayout.from_dict(r)
    except (KeyError, TypeError, ValueError) as exc:
        fail("refit", "the layout does not fit ({})".format(exc))
    weights = [t for t in layout.tensors if t.dtype == "int8"]
    if not weights or weights[-1].shape[0] != head:
        fail(
            "refit",
            "the last weight tensor has {} rows; head_width is {}".format(weights[-1].shape[0] if weights else 0, head),
        )
    return layout


def _changed(r: dict, layout: PackedLayout) -> Optional[Tuple[str, ...]]:
    """The optional ``refit.changed``: the packed tensors some delta changes (what an engine marks
    refittable and a switch refits), each one of ``refit.tensors``, once, in that list's order."""
    if "changed" not in r:
        return None
    raw = check(r["changed"], "refit.changed", list)
    if len(raw) > len(layout.tensors):
        fail("refit.changed", "{} names for {} refit tensors".format(len(raw), len(layout.tensors)))
    order = {t.name: i for i, t in enumerate(layout.tensors)}
    at = []
    for i, name in enumerate(raw):
        if not isinstance(name, str) or name not in order:
            fail("refit.changed[{}]".format(i), "{} is not one of refit.tensors".format(N.shown(name)))
        at.append(order[name])
    if at != sorted(set(at)):
        fail("refit.changed", "names a tensor twice, or not in the order of refit.tensors")
    return tuple(raw)


def _delta_budget(d: dict) -> Optional[Tuple[str, float, str]]:
    """The optional ``training.delta_budget``: {"mode", "value", "text"} as ``train --delta-budget``
    parsed it (toolchain/train/delta_budget.py)."""
    t = check(d.get("training", {}), "training", dict)
    if "delta_budget" not in t:
        return None
    b = check(t["delta_budget"], "training.delta_budget", dict)
    mode = b.get("mode")
    if mode not in choices.BUDGET_MODES:
        fail("training.delta_budget.mode", "{} is not one of {}".format(N.shown(mode), ", ".join(choices.BUDGET_MODES)))
    value = check(b.get("value"), "training.delta_budget.value", float, 0.0)
    return str(mode), value, N.printable(b.get("text"), "training.delta_budget.text", "text")


def _deltas(raw: list, supers, layout: PackedLayout) -> Tuple[Delta, ...]:
    if len(raw) != len(supers):
        fail("deltas", "{} entries for {} superclasses".format(len(raw), len(supers)))
    out = []
    total = layout.total_nbytes
    for i, e in enumerate(raw):
        where = "deltas[{}]".format(i)
        e = check(e, where, dict)
        f = _file(e, where, total + total // 8 + 65536, "deltas")  # no codec stores more than this
        if check(e.get("index", i), where + ".index", int, 0, len(supers) - 1) != i:
            fail(where + ".index", "is {}, expected {}".format(e.get("index"), i))
        name = N.name(e.get("superclass", supers[i][0]), where + ".superclass")
        if name != supers[i][0]:
            fail(where + ".superclass", "{!r} is not superclass {} ({!r})".format(name, i, supers[i][0]))
        codec = e.get("codec")
        if codec not in CODECS:
            fail(where + ".codec", "{!r} is not one of {}".format(N.shown(codec), ", ".join(CODECS)))
        raw_size = check(e.get("raw_size"), where + ".raw_size", int, 0)
        if raw_size != total:
            fail(where + ".raw_size", "{} differs from the refit layout's {} bytes".format(raw_size, total))
        rsha = e.get("raw_sha256")
        if rsha is not None and (not isinstance(rsha, str) or not _SHA.match(rsha)):
            fail(where + ".raw_sha256", "not 64 lowercase hex digits")
        out.append(Delta(f.file, f.size, f.sha256, i, name, codec, raw_size, rsha))
    return tuple(out)


def _samples(s, shape) -> Tuple[Optional[FileEntry], Optional[Tuple[int, ...]]]:
    if not s:
        return None, None
    s = check(s, "samples", dict)
    f = _file(s, "samples", MAX_SAMPLES_BYTES)
    dims = check(s.get("shape"), "samples.shape", list)
    dims = tuple(check(v, "samples.shape[{}]".format(i), int, 1, MAX_SAMPLES_BYTES) for i, v in enumerate(dims))
    if len(dims) != 4 or dims[1:] != tuple(shape):
        fail("samples.shape", "{} is not (N, {}, {}, {})".format(list(dims), *shape))
    if dims[0] * 4 * dims[1] * dims[2] * dims[3] > f.size:
        fail("samples.shape", "{} float32 values do not fit in {} bytes".format(list(dims), f.size))
    return f, dims
