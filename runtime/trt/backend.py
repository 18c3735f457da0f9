"""TensorRT backend: one int8 engine with refittable weights (TensorRT 8.5, 8.6, 10.x, 11; 8.2 for fp16).

Kept thin on purpose: the weight map, the packed layout, the weight forms and the delta
math are shared, CPU-tested code (:mod:`.refit_map`, :mod:`..weights`,
:mod:`.weight_forms`, :mod:`.delta_apply`); ``edgetool doctor`` proves this module on
the device against ONNX Runtime.

* Build (:mod:`.loader`): a strongly typed network where TensorRT offers one (10, 11), else
  ``BuilderFlag.INT8`` (+ FP16 fallback); ``REFIT`` or, on TensorRT >= 10,
  ``REFIT_INDIVIDUAL`` with only the weights that some delta changes marked refittable;
  one optimization profile; optional weight-stripped plan (``STRIP_PLAN``, TensorRT >= 10).
  The weights enter the engine in the form the version takes (:func:`.weight_forms.weight_form`):
  int8 codes on TensorRT >= 10, float weights behind QuantizeLinear/DequantizeLinear on 8.x,
  dequantized fp16 on devices without int8 (Nano, TX2).
* Refit set: a switch hands the refitter exactly the tensors some delta changes (the manifest's
  ``refit.changed``, :mod:`..bundle.refit_set`), never the others, whatever the engine could refit.
* Refit, TensorRT >= 10: every packed tensor lives in the persistent packed weights
  buffer of :class:`~.delta_apply.DeviceDeltaApplier`, and those of the refit set are given to
  the refitter as device memory (``TensorLocation.DEVICE``, pointers only); a switch is H2D copy
  + one kernel launch + ``refit_cuda_engine_async`` on the inference stream, weights validation off.
* Refit, TensorRT 8.x: host weights and a synchronous ``refit_cuda_engine``.
* Weights TensorRT asks for besides ours (``get_missing_weights``, e.g. the Q/DQ scales fused
  into a convolution, or a packed tensor outside the refit set fused with one in it) are supplied
  unchanged from the model (packed tensors: their base values); anything else is an error.
* Modes: ``one-engine`` (the paper's: refit to base, then to the subclass) and
  ``two-engine`` (a fixed superclass engine plus one refittable subclass engine).
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Dict, Optional, cast


from ..backends.base import BASE, Backend
from ..choices import ENGINE_MODES as MODES
from ..errors import BackendError, DeviceError, SwitchError, UsageError, require
from ..machine import gpu_name
from ..bundle.onnx_weights import read_initializers
from ..bundle.packed import PackedWeights
from ..bundle.refit_set import refit_set
from .engine_store import select_engine
from .loader import build_engine, trt_logger, trt_version
from .refit_map import build_refit_map, companions, fixed_weights, missing_report, refit_plan, trt_dtype
from .runner import EngineRunner
from .weight_forms import engine_name, host_arrays, weight_form

if TYPE_CHECKING:
    import numpy as np

    from .delta_apply import DeviceDeltaApplier

log = logging.getLogger(__name__)


class TrtBackend(Backend):
    name = "tensorrt"

    def __init__(
        self,
        bundle,
        plan: Optional[bytes] = None,
        precision: Optional[str] = None,
        mode: str = "one-engine",
        max_batch: int = 32,
        workspace_mb: int = 1024,
    ):
        super().__init__(bundle)
        if mode not in MODES:
            raise UsageError("unknown engine mode {!r}; choose one of {}".format(mode, ", ".join(MODES)))
        trt = require("tensorrt")
        cuda = require("pycuda.driver")
        require("pycuda.autoinit")
        self.trt, self.cuda, self.mode, self.workspace_mb = trt, cuda, mode, workspace_mb
        self.version = trt_version(trt)
        if self.version < (8, 2):
            raise DeviceError("TensorRT {} is too old: edgetool needs TensorRT 8.2 or newer".format(trt.__version__))
        model = bundle.base_onnx()
        self.initializers = read_initializers(model)
        build_refit_map(self.layout, self.initializers, source=bundle._display("base.onnx"))  # names, dtypes, shapes
        self.base = self.layout.pack({t.name: self.initializers[t.name] for t in self.layout.tensors})
        plan, entry = self._plan(model, plan, precision, workspace_mb, max_batch)
        self.max_batch = max_batch if entry is None else int(entry.get("max_batch", max_batch))
        self.stream = cuda.Stream()
        args = (
            trt,
            cuda,
            plan,
            self.stream,
            bundle.input["name"],
            bundle.output_name,
            bundle.input["shape"],
            bundle.head_width,
            self.max_batch,
        )
        static = bool(entry is not None and entry.get("static_batch"))  # a DLA engine: one batch size
        self.engine_entry = entry
        self.sub = EngineRunner(*args, static=static)  # the refittable engine
        self.fixed = EngineRunner(*args, static=static) if mode == "two-engine" else None  # never refitted: the base
        self.sub_loaded = BASE
        self._setup_refitter()

    def _plan(self, model, plan, precision, workspace_mb, max_batch):
        """*plan*, else the bundle's engine for this device, else one built in memory; sets the precision and
        weight form. Returns the plan and the manifest entry it came from (None when not from the bundle)."""
        entry = self._engine_entry(precision) if plan is None else None
        form = None
        if plan is None and entry is not None:
            log.info(
                "engine: %s from the bundle (TensorRT %s, %s)",
                entry["file"],
                entry.get("tensorrt"),
                entry.get("device"),
            )
            plan = self.bundle.read_file(entry)
            precision = entry.get("precision", precision)
            form = entry.get("weights")
        self.precision = precision or "int8"
        self.form = weight_form(self.version, self.precision, form)
        if plan is None:
            log.info("engine: none stored for this device; building one in memory")
            changed = self.bundle.model.changed  # the recorded refit set (an older bundle's engine refits all)
            plan = build_engine(
                model,
                self.bundle.input["name"],
                self.bundle.input["shape"],
                self.precision,
                workspace_mb=workspace_mb,
                max_batch=max_batch,
                refit_only=None if changed is None else [self.layout.by_name[n] for n in changed],
                form=self.form,
            )
        return plan, entry

    def _engine_entry(self, precision):
        return select_engine(
            self.bundle.manifest.get("engines", []),
            self.trt.__version__,
            gpu_name(),
            precision,
            self.bundle.archive or self.bundle.root,
        )

    # -- refit --------------------------------------------------------------------------------
    def _setup_refitter(self):
        trt, layout, bundle = self.trt, self.layout, self.bundle
        self.refitter = trt.Refitter(self.sub.engine, trt_logger(trt))
        if hasattr(self.refitter, "weights_validation"):
            self.refitter.weights_validation = False
        # exactly the manifest's refit set where it records one (runtime.bundle.refit_set)
        changed = bundle.model.changed
        self.plan = refit_plan(
            layout, self.form, self.refitter.get_all_weights(), lambda: refit_set(bundle)[0], changed
        )
        # TensorRT >= 10 with int8 weights: the engine reads the kernel's device buffer in place.
        self.device_weights = self.version >= (10, 0) and self.form == "int8"
        self.companions: Dict[str, np.ndarray] = {}
        if self.device_weights:
            from .delta_apply import DeviceDeltaApplier

            self.applier: Optional[DeviceDeltaApplier] = DeviceDeltaApplier(layout, self.base, stream=self.stream)
            # One persistent device buffer; each Weights points into it for good.
            self.device_entries = [
                (name, trt.Weights(trt_dtype(trt, spec.dtype), self.applier.pointer(spec.name), spec.numel))
                for spec, name in self.plan
            ]
            self._set_device_weights()
        else:
            self.packed = PackedWeights(layout, self.base)  # sparse deltas are scatter-added in place
            self.host = self.packed.buf
            self.host_arrays = host_arrays(layout, self.host, self.form)
            self._set_host_weights()
        # what TensorRT also asks for: model constants, and packed tensors outside the plan (base values)
        known = [name for _, name in self.plan]
        constants = {**self.initializers, **fixed_weights(layout, self.base, self.form, self.plan)}
        self.companions, unknown = companions(list(self.refitter.get_missing_weights()), constants, known)
        if self.companions:
            self._set_companions()
        missing = list(self.refitter.get_missing_weights())
        if missing:
            raise BackendError(missing_report(missing, [engine_name(t, self.form) for t in layout.tensors]))

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
            cast("DeviceDeltaApplier", self.applier).apply(delta)
        else:
            self.packed.set(delta)
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

    def _weights_unknown(self):
        if getattr(self, "packed", None) is not None:
            self.packed.invalidate()

    def _infer(self, batch):
        return self._engine().infer(batch)

    def _infer_features(self, batch):
        return self._engine().infer(batch, features=True)

    def _engine(self):
        return self.fixed if (self.fixed is not None and self.current == BASE) else self.sub

    def memory(self):
        free, total = self.cuda.mem_get_info()
        out = {
            "gpu_free_bytes": int(free),
            "gpu_total_bytes": int(total),
            "engine_device_memory_bytes": self.sub.device_memory(),
            "packed_weights_bytes": int(self.layout.total_nbytes),
        }
        if self.fixed is not None:
            out["engines"] = 2
        return out

    def close(self):
        if getattr(self, "applier", None) is not None:
            cast("DeviceDeltaApplier", self.applier).free()
            self.applier = None
