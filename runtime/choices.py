"""Every set of user choices, defined once: the CLI, the library and the README use these.

Plain data, no imports: the device side, the workstation side and the tests read them.
"""

from __future__ import annotations

# Routing policies of the two-stage classifier (runtime/classifier.py).
POLICIES = ("per-image", "batched", "sticky", "topk")
DEFAULT_POLICY = "batched"
# The policies that make sense for a set of files (`edgetool classify`): each image is routed on
# its own.  "sticky" assumes consecutive frames of one scene; it lives with the stream loop
# (`edgetool camera`, runtime/camera/schedule.py), whose flags set its hysteresis.
FILE_POLICIES = ("per-image", "batched", "topk")
# The policies of a stream (`edgetool camera`): "superclass" runs the base network alone.
STREAM_POLICIES = ("sticky", "per-image", "batched", "topk", "superclass")

# How the input spec resizes an image (runtime/preprocess.py; the manifest's input.resize, "squash" when
# absent): "squash" straight to H x W; "shorter" the shorter side to round(min(H, W) / input.crop), then
# the centre H x W (pretrained backbones' evaluation transform).
RESIZE_MODES = ("squash", "shorter")

# Inference backends (runtime/backends/), with the short names load_backend also takes.
BACKENDS = ("onnxruntime", "tensorrt")
BACKEND_ALIASES = {"ort": "onnxruntime", "trt": "tensorrt"}
DEFAULT_BACKEND = "onnxruntime"

# Delta codecs a bundle may name (runtime/bundle/codecs.py); "raw" exists for measurements only.
CODECS = ("zstd", "7z", "sparse")
DEFAULT_CODEC = "zstd"  # chosen by benchmarks/switch_latency.py: decode time is switch latency

# How refittable weights enter a TensorRT engine (runtime/trt/weight_forms.py).
WEIGHT_FORMS = ("int8", "qdq-float", "fp16")

# TensorRT engine modes (runtime/trt/backend.py).
ENGINE_MODES = ("one-engine", "two-engine")
DEFAULT_ENGINE_MODE = "one-engine"

# Forms of the delta budget (`train --delta-budget`, toolchain/train/delta_budget.py); a
# Super-Sub bundle's manifest records the one its deltas were trained with (training.delta_budget).
BUDGET_MODES = ("dense", "prox", "topk", "grid", "patch")

# What `edgetool export --model` writes: the Super-Sub bundle, or one of the flat controls
# (toolchain/evaluate/bounds.py) as a single-network bundle (manifest "model": {"kind": "flat"}).
FLAT_CONTROLS = {"flat": "budget", "flat-wide": "wide"}  # export --model -> the flat control's kind
EXPORT_MODELS = ("super-sub",) + tuple(FLAT_CONTROLS)
DEFAULT_EXPORT_MODEL = "super-sub"

# Optional dependency (top-level module) -> the extra that installs it.
EXTRAS = {
    "torch": "train",
    "torchvision": "train",
    "onnx": "train",
    "tqdm": "train",
    "matplotlib": "train",
    "markdown": "train",
    "scipy": "train",
    "onnxruntime": "cpu",
    "cryptography": "deploy",
}
# Installed by a different extra on a Jetson and elsewhere (an x86 machine with an NVIDIA GPU).
PLATFORM_EXTRAS = {"pycuda": {"jetson": "jetson", "other": "gpu"}}
# No extra installs these: where they come from instead, on a Jetson and elsewhere.
NOT_FROM_EXTRAS = {
    "tensorrt": {
        "jetson": "TensorRT comes with JetPack (a virtualenv sees JetPack's TensorRT only when made with "
        "--system-site-packages)",
        "other": "TensorRT comes with JetPack on a Jetson (pip install tensorrt on an x86 machine with an NVIDIA GPU)",
    },
    # Mender's own tools (`edgetool mender`), packaged by Debian (bookworm: mender-client 3.4, mender-artifact 3.9)
    "mender-artifact": {
        "jetson": "install the Debian package: sudo apt-get install mender-artifact",
        "other": "install the Debian package: sudo apt-get install mender-artifact",
    },
    "mender-client": {
        "jetson": "install the Debian package: sudo apt-get install mender-client",
        "other": "install the Debian package: sudo apt-get install mender-client",
    },
}


def extra_for(module: str, jetson: bool = False):
    """The extra that installs *module* (a dotted name is looked up by its top level) on a Jetson or
    elsewhere, or None."""
    top = (module or "").split(".")[0]
    if top in PLATFORM_EXTRAS:
        return PLATFORM_EXTRAS[top]["jetson" if jetson else "other"]
    return EXTRAS.get(top)


def install_hint(module: str, jetson: bool = False):
    """How to get *module* on a Jetson or elsewhere (the extra to install, or where it comes from), or None."""
    top = (module or "").split(".")[0]
    if top in NOT_FROM_EXTRAS:
        return NOT_FROM_EXTRAS[top]["jetson" if jetson else "other"]
    extra = extra_for(top, jetson)
    return None if extra is None else "install it with: pip install 'edgetool[{}]'".format(extra)
