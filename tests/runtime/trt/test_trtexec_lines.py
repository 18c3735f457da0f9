"""The trtexec lines edgetool prints (`engine onnx`, `engine build`'s log, the flags doctor's DLA line adds)
use only what the trtexec of each TensorRT they are meant for accepts.

No trtexec runs here, so each line is parsed as trtexec parses its arguments (``--flag`` or
``--flag=value``; a flag its release does not know is refused as an unknown option): every flag must be one
of that release's (``trtexec_flags.py``, from TensorRT's sources), and every value must have the form
trtexec reads (shapes ``name:NxCxHxW``, the workspace pool ``workspace:MiB``, integers where it wants one).
"""

import re

import pytest

from trtexec_flags import FLAGS

from edgetool.runtime.device_profiles import load, names
from edgetool.runtime.trt.commands import JETPACK_TENSORRT, profile_tensorrt, trtexec_args

RELEASES = {v: tuple(int(p) for p in v.split(".")) for v in FLAGS}
SHAPE = re.compile(r"^[A-Za-z_][\w.:/-]*:\d+(x\d+)*$")
VALUES = {
    "--minShapes": SHAPE,
    "--optShapes": SHAPE,
    "--maxShapes": SHAPE,
    "--memPoolSize": re.compile(r"^workspace:\d+$"),
    "--workspace": re.compile(r"^\d+$"),
    "--useDLACore": re.compile(r"^\d+$"),
    "--onnx": re.compile(r"^\S+\.onnx$"),
    "--saveEngine": re.compile(r"^\S+$"),
}
BARE = {"--int8", "--fp16", "--refit", "--stronglyTyped", "--stripWeights", "--allowGPUFallback"}


def problems(argv, release):
    """Why trtexec of *release* would refuse *argv* (an empty list: it parses)."""
    assert argv[0] == "trtexec"
    out = []
    for arg in argv[1:]:
        flag, eq, value = arg.partition("=")
        if flag not in FLAGS[release]:
            out.append("{}: unknown to trtexec {}".format(flag, release))
        elif eq and flag in VALUES and not VALUES[flag].match(value):
            out.append("{}: value {!r} is not what trtexec reads".format(flag, value))
        elif not eq and flag not in BARE:
            out.append("{}: needs a value".format(flag))
    return out


def builds(release, precision, form):
    """Whether edgetool builds an engine of *form* with TensorRT *release* (runtime/trt/loader.py and
    weight_forms.py: int8 weights need 10 or newer; fp16 engines need the FP16 flag, gone in 11)."""
    v = RELEASES[release]
    if precision == "fp16":
        return v < (11, 0)
    return v >= (10, 0) if form == "int8" else True


def lines(tensorrt, precision, typed):
    """Every trtexec line `engine build` / `engine onnx` print for this precision (*typed*: a strongly typed
    int8 network), with and without a DLA core, with and without stripped weights where TensorRT has them."""
    strip = (False, True) if tensorrt is None or tuple(tensorrt) >= (10, 0) else (False,)
    for core in (None, 0):
        for s in strip:
            yield trtexec_args(
                "engine.onnx", "input", (3, 224, 224), precision, 16, 512, 8, s, typed, core, tensorrt=tensorrt
            )


@pytest.mark.parametrize("release", sorted(FLAGS, key=lambda v: RELEASES[v]))
def test_lines_for_an_installed_tensorrt_parse_in_its_trtexec(release):
    for precision, form in (("int8", "int8"), ("int8", "qdq-float"), ("fp16", "fp16")):
        if not builds(release, precision, form):
            continue
        typed = precision == "int8" and RELEASES[release] >= (10, 0)  # loader.strongly_typed: TensorRT 10 on
        for argv in lines(RELEASES[release], precision, typed):
            assert problems(argv, release) == [], (precision, form, argv)
    for flag in ("--dumpLayerInfo", "--profilingVerbosity"):  # what doctor's DLA line says to add
        assert flag in FLAGS[release]


@pytest.mark.parametrize("profile", names())
def test_lines_written_without_tensorrt_parse_on_the_profiles_devices(profile):
    """`engine onnx` where no TensorRT is installed: the line is for the oldest TensorRT of the profile's
    JetPacks, and must parse in every release of them that builds its form (a profile without JetPack:
    every release from 8.4 on, since --workspace left trtexec in 10)."""
    p = load(profile)
    tensorrt = profile_tensorrt(p)
    jetpacks = [JETPACK_TENSORRT[j] for j in p.get("jetpack", [])]
    mine = [r for r, v in RELEASES.items() if not jetpacks or any(v[:2] >= j and v[0] == j[0] for j in jetpacks)]
    if not jetpacks:
        mine = [r for r in mine if RELEASES[r] >= (8, 4)]
    forms = [("fp16", "fp16")] if p["precision"] == "fp16" else [("int8", "int8"), ("int8", "qdq-float")]
    checked = 0
    for precision, form in forms:
        for release in mine:
            if not builds(release, precision, form) or (form == "qdq-float" and RELEASES[release] >= (10, 0)):
                continue
            for argv in lines(tensorrt, precision, form == "int8"):  # trt/cli.py _strongly_typed_here
                if "--stripWeights" in argv and RELEASES[release] < (10, 0):
                    continue
                assert problems(argv, release) == [], (profile, release, argv)
                checked += 1
    assert checked or not p.get("gpu", True), profile


def test_the_check_refuses_what_an_old_trtexec_refuses():
    """trtexec 8.2 (JetPack 4.6: Nano, TX2) has no --memPoolSize; the line for it says --workspace."""
    modern = trtexec_args("m.onnx", "input", (1, 28, 28), "fp16", 8, 256)
    assert problems(modern, "8.2") == ["--memPoolSize: unknown to trtexec 8.2"]
    assert problems(modern, "8.6") == []
    old = trtexec_args("m.onnx", "input", (1, 28, 28), "fp16", 8, 256, tensorrt=(8, 2))
    assert "--workspace=256" in old and problems(old, "8.2") == []
    assert profile_tensorrt(load("nano")) == (8, 2) and profile_tensorrt(load("desktop-gpu")) is None
    assert problems(["trtexec", "--minShapes=input:1x28"], "11.1") == []
    assert problems(["trtexec", "--minShapes=1x3x28x28", "--fp16"], "11.1") == [
        "--minShapes: value '1x3x28x28' is not what trtexec reads",
        "--fp16: unknown to trtexec 11.1",
    ]
