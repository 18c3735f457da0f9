"""TensorRT backend: one int8 engine with refittable weights (TensorRT 8.5, 8.6, 10.x; 8.2 for fp16).

Kept thin on purpose: the weight map, the packed layout, the weight forms and the delta
math are shared, CPU-tested code (:mod:`..refit_map`, :mod:`..weights`,
:mod:`..engine_weights`, :mod:`..cuda_delta`); ``edgetool doctor`` proves this module on
the device against ONNX Runtime.

* Build: ``BuilderFlag.INT8`` (+ FP16 fallback), ``REFIT`` or, on TensorRT >= 10,
  ``REFIT_INDIVIDUAL`` with only the weights that some delta changes marked refittable;
  one optimization profile; optional weight-stripped plan (``STRIP_PLAN``, TensorRT >= 10).
  The weights enter the engine in the form the version takes (:func:`..engine_weights.weight_form`):
  int8 codes on TensorRT >= 10, float weights behind QuantizeLinear/DequantizeLinear on 8.x,
  dequantized fp16 on devices without int8 (Nano, TX2).
* Refit, TensorRT >= 10: every refittable tensor lives in the persistent packed weights
  buffer of :class:`~..cuda_delta.DeviceDeltaApplier` and is given to the refitter as device
  memory (``TensorLocation.DEVICE``, pointers only); a switch is H2D copy + one kernel launch
  + ``refit_cuda_engine_async`` on the inference stream, weights validation off.
* Refit, TensorRT 8.x: host weights and a synchronous ``refit_cuda_engine``.
* Weights TensorRT asks for besides ours (``get_missing_weights``, e.g. the Q/DQ scales fused
  into a convolution) are supplied unchanged from the model; anything else is an error.
* Modes: ``one-engine`` (the paper's: refit to base, then to the subclass) and
  ``two-engine`` (a fixed superclass engine plus one refittable subclass engine).
"""
from __future__ import annotations

import time
from typing import Optional, Sequence

import numpy as np

from ..engine_weights import (companions, engine_model, engine_name, host_arrays, refit_plan, select_engine,
                              weight_form)
from ..errors import BackendError, DeviceError, SwitchError, UsageError, require
from ..onnx_weights import read_initializers
from ..refit_map import build_refit_map, missing_report, trt_dtype
from .base import BASE, Backend

MODES = ("one-engine", "two-engine")


def trt_version(trt) -> tuple:
    return tuple(int(p) for p in trt.__version__.split(".")[:2])


def gpu_name() -> str:
    """The CUDA device name an engine is recorded with (``unknown`` without pycuda or a GPU)."""
    try:
        import pycuda.driver as cuda

        cuda.init()
        return cuda.Device(0).name()
    except Exception:
        return "unknown"


def _logger(trt):
    return trt.Logger(trt.Logger.WARNING)


def build_engine(model_bytes: bytes, input_name: str, input_shape: Sequence[int], precision: str = "int8",
                 workspace_mb: int = 1024, max_batch: int = 32, opt_batch: int = 1,
                 refit_only: Optional[Sequence] = None, strip_weights: bool = False,
                 form: Optional[str] = None) -> bytes:
    """Build a serialized engine (plan) on this device.

    *refit_only*: the packed tensors (layout specs) to mark refittable with REFIT_INDIVIDUAL;
    *form*: the weight form (see :mod:`..engine_weights`), by default the one for this version.
    """
    trt = require("tensorrt", "jetson")
    version = trt_version(trt)
    form = weight_form(version, precision, form)
    logger = _logger(trt)
    builder = trt.Builder(logger)
    if precision == "int8" and hasattr(builder, "platform_has_fast_int8") and not builder.platform_has_fast_int8:
        raise DeviceError("this GPU has no fast int8; build with a profile whose precision is fp16 (e.g. nano)")
    flags = 0 if version >= (10, 0) else 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    model = engine_model(model_bytes, form)
    if not parser.parse(model):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise BackendError("TensorRT cannot parse base.onnx ({} weights): {}".format(form, errors))
    config = builder.create_builder_config()
    if hasattr(config, "set_memory_pool_limit"):
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_mb) << 20)
    else:  # TensorRT < 8.4
        config.max_workspace_size = int(workspace_mb) << 20
    if precision == "int8":
        config.set_flag(trt.BuilderFlag.INT8)
    config.set_flag(trt.BuilderFlag.FP16)
    if refit_only is not None and hasattr(trt.BuilderFlag, "REFIT_INDIVIDUAL"):
        config.set_flag(trt.BuilderFlag.REFIT_INDIVIDUAL)
        for spec in refit_only:
            target = engine_name(spec, form)
            if not network.mark_weights_refittable(target):
                raise BackendError("TensorRT cannot mark {!r} refittable".format(target))
    else:
        config.set_flag(trt.BuilderFlag.REFIT)
    if strip_weights:
        if not hasattr(trt.BuilderFlag, "STRIP_PLAN"):
            raise DeviceError("weight-stripped plans need TensorRT >= 10 (this is {})".format(trt.__version__))
        config.set_flag(trt.BuilderFlag.STRIP_PLAN)
    c, h, w = input_shape
    profile = builder.create_optimization_profile()
    profile.set_shape(input_name, (1, c, h, w), (max(1, min(opt_batch, max_batch)), c, h, w), (max_batch, c, h, w))
    config.add_optimization_profile(profile)
    plan = builder.build_serialized_network(network, config)
    if plan is None:
        raise BackendError("TensorRT failed to build the engine (see the TensorRT log above)")
    return bytes(plan)


class _Engine:
    """One deserialized engine + context + I/O buffers.

    Tensor-name API (``set_tensor_address`` / ``execute_async_v3``) on TensorRT >= 8.5; the
    binding-index API (``execute_async_v2``) on TensorRT 8.2, which JetPack 4.6 ships for
    Jetson Nano and TX2.
    """

    def __init__(self, trt, cuda, plan: bytes, stream, input_name, output_name, input_shape, head, max_batch):
        self.trt, self.cuda = trt, cuda
        self.runtime = trt.Runtime(_logger(trt))
        self.engine = self.runtime.deserialize_cuda_engine(plan)
        if self.engine is None:
            raise BackendError("cannot deserialize the TensorRT engine (built by another TensorRT version or GPU?)")
        self.context = self.engine.create_execution_context()
        self.stream = stream
        self.input_name, self.output_name = input_name, output_name
        self.input_shape, self.head, self.max_batch = tuple(input_shape), head, max_batch
        nin = int(np.prod(input_shape)) * max_batch * 4
        self.d_in = cuda.mem_alloc(nin)
        self.d_out = cuda.mem_alloc(head * max_batch * 4)
        self.named_io = hasattr(self.context, "set_tensor_address")
        if self.named_io:
            self.context.set_tensor_address(input_name, int(self.d_in))
            self.context.set_tensor_address(output_name, int(self.d_out))
        else:
            self.input_index = self.engine.get_binding_index(input_name)
            output_index = self.engine.get_binding_index(output_name)
            if self.input_index < 0 or output_index < 0 or self.engine.num_bindings != 2:
                raise BackendError("the engine's bindings are not {!r} -> {!r}".format(input_name, output_name))
            self.bindings = [0, 0]
            self.bindings[self.input_index] = int(self.d_in)
            self.bindings[output_index] = int(self.d_out)

    def infer(self, batch: np.ndarray) -> np.ndarray:
        n = batch.shape[0]
        if n > self.max_batch:
            raise BackendError("batch {} exceeds the engine's max batch {}".format(n, self.max_batch))
        shape = (n,) + self.input_shape
        out = np.empty((n, self.head), dtype=np.float32)
        self.cuda.memcpy_htod_async(self.d_in, batch, self.stream)
        if self.named_io:
            self.context.set_input_shape(self.input_name, shape)
            ok = self.context.execute_async_v3(self.stream.handle)
        else:
            self.context.set_binding_shape(self.input_index, shape)
            ok = self.context.execute_async_v2(self.bindings, self.stream.handle)
        if not ok:
            raise BackendError("TensorRT execution failed")
        self.cuda.memcpy_dtoh_async(out, self.d_out, self.stream)
        self.stream.synchronize()
        return out


class TrtBackend(Backend):
    name = "tensorrt"

    def __init__(self, bundle, plan: Optional[bytes] = None, precision: Optional[str] = None,
                 mode: str = "one-engine", max_batch: int = 32, workspace_mb: int = 1024):
        super().__init__(bundle)
        if mode not in MODES:
            raise UsageError("unknown engine mode {!r}; choose one of {}".format(mode, ", ".join(MODES)))
        trt = require("tensorrt", "jetson")
        cuda = require("pycuda.driver", "jetson")
        require("pycuda.autoinit", "jetson")
        self.trt, self.cuda, self.mode = trt, cuda, mode
        self.version = trt_version(trt)
        if self.version < (8, 2):
            raise DeviceError("TensorRT {} is too old: edgetool needs TensorRT 8.2 or newer".format(trt.__version__))
        model = bundle.base_onnx()
        self.initializers = read_initializers(model)
        build_refit_map(self.layout, self.initializers, source=bundle._display("base.onnx"))  # names, dtypes, shapes
        self.base = self.layout.pack({t.name: self.initializers[t.name] for t in self.layout.tensors})
        entry = self._engine_entry(precision) if plan is None else None
        form = None
        if plan is None and entry is not None:
            plan = bundle.read_file(entry)
            precision = entry.get("precision", precision)
            form = entry.get("weights")
        self.precision = precision or "int8"
        self.form = weight_form(self.version, self.precision, form)
        if plan is None:
            plan = build_engine(model, bundle.input["name"], bundle.input["shape"], self.precision,
                                workspace_mb=workspace_mb, max_batch=max_batch, form=self.form)
        self.max_batch = max_batch if entry is None else int(entry.get("max_batch", max_batch))
        self.stream = cuda.Stream()
        args = (trt, cuda, plan, self.stream, bundle.input["name"], bundle.output_name, bundle.input["shape"],
                bundle.head_width, self.max_batch)
        self.sub = _Engine(*args)  # the refittable engine
        self.fixed = _Engine(*args) if mode == "two-engine" else None  # never refitted: the base
        self.sub_loaded = BASE
        self._setup_refitter()

    def _engine_entry(self, precision):
        return select_engine(self.bundle.manifest.get("engines", []), self.trt.__version__, gpu_name(),
                             precision, self.bundle.archive or self.bundle.root)

    # -- refit --------------------------------------------------------------------------------
    def _setup_refitter(self):
        trt, layout, bundle = self.trt, self.layout, self.bundle
        self.refitter = trt.Refitter(self.sub.engine, _logger(trt))
        if hasattr(self.refitter, "weights_validation"):
            self.refitter.weights_validation = False
        self.plan = refit_plan(layout, self.form, self.refitter.get_all_weights(),
                               lambda: layout.changed_tensors(bundle.read_delta(k) for k in range(bundle.num_superclasses)))
        # TensorRT >= 10 with int8 weights: the engine reads the kernel's device buffer in place.
        self.device_weights = self.version >= (10, 0) and self.form == "int8"
        self.companions = {}
        if self.device_weights:
            from ..cuda_delta import DeviceDeltaApplier

            self.applier = DeviceDeltaApplier(layout, self.base, stream=self.stream)
            # One persistent device buffer; each Weights points into it for good.
            self.device_entries = [(name, trt.Weights(trt_dtype(trt, spec.dtype), self.applier.pointer(spec.name),
                                                      spec.numel)) for spec, name in self.plan]
            self._set_device_weights()
        else:
            self.host = self.base.copy()
            self.host_arrays = host_arrays(layout, self.host, self.form)
            self._set_host_weights()
        known = [engine_name(t, self.form) for t in layout.tensors]
        self.companions, unknown = companions(list(self.refitter.get_missing_weights()), self.initializers, known)
        if self.companions:
            self._set_companions()
        missing = list(self.refitter.get_missing_weights())
        if missing:
            raise BackendError(missing_report(missing, known))

    def _set_device_weights(self):
        # Pointer registration only, no copy.  Like trtexec --timeRefit, the weights are handed
        # to the refitter again before every refit rather than assumed to outlive one.
        for name, w in self.device_entries:
            if not self.refitter.set_named_weights(name, w, self.trt.TensorLocation.DEVICE):
                raise BackendError("TensorRT rejected device weights for {!r}".format(name))

    def _set_companions(self):
        for name, arr in self.companions.items():
            if not self.refitter.set_named_weights(name, self.trt.Weights(arr)):
                raise BackendError("TensorRT rejected the constant weights {!r}".format(name))

    def _set_host_weights(self):
        trt = self.trt
        for _, name in self.plan:
            if not self.refitter.set_named_weights(name, trt.Weights(self.host_arrays[name])):
                raise BackendError("TensorRT rejected host weights for {!r}".format(name))

    def _refit(self) -> None:
        if self.device_weights and hasattr(self.refitter, "refit_cuda_engine_async"):
            ok = self.refitter.refit_cuda_engine_async(self.stream.handle)
        else:
            ok = self.refitter.refit_cuda_engine()
        if not ok:
            raise SwitchError("TensorRT refit failed")

    def switch(self, target: int, force: bool = False) -> bool:
        if self.mode == "two-engine":
            # The base lives in its own engine: switching to it (or back to the subclass
            # already loaded) moves no weights.
            target = int(target)
            if target == BASE or target == self.sub_loaded:
                changed = target != self.current
                self.current = target
                return changed
        try:
            changed = super().switch(target, force)
        finally:  # after a failed switch too, so the two-engine shortcut never claims weights it may not hold
            self.sub_loaded = self.current
        return changed

    def _apply(self, delta) -> None:
        t0 = time.perf_counter()
        if self.device_weights:
            self.applier.apply(delta)
        else:
            if delta is None:
                np.copyto(self.host, self.base)
            else:
                self.layout.apply_delta(self.base, delta, out=self.host)
            # int8: views of self.host; float forms: fresh dequantized arrays, kept alive here
            # until the refit below has read them.
            self.host_arrays = host_arrays(self.layout, self.host, self.form)
        t1 = time.perf_counter()
        if self.device_weights:
            self._set_device_weights()
        else:
            self._set_host_weights()
        self._set_companions()
        self._refit()
        if self.device_weights:
            self.stream.synchronize()
        self.timings.add("refit", (time.perf_counter() - t1) * 1e3)
        self.timings.add("h2d_kernel", (t1 - t0) * 1e3)

    def _infer(self, batch):
        engine = self.fixed if (self.fixed is not None and self.current == BASE) else self.sub
        return engine.infer(batch)

    def memory(self):
        free, total = self.cuda.mem_get_info()
        out = {"gpu_free_bytes": int(free), "gpu_total_bytes": int(total),
               "engine_device_memory_bytes": int(getattr(self.sub.engine, "device_memory_size", 0)),
               "packed_weights_bytes": int(self.layout.total_nbytes)}
        if self.fixed is not None:
            out["engines"] = 2
        return out

    def close(self):
        if getattr(self, "applier", None) is not None:
            self.applier.free()
            self.applier = None
