"""TensorRT backend: one int8 engine with refittable weights (TensorRT 8.5, 8.6, 10.x, 11; 8.2 for fp16).

Kept thin on purpose: the weight map, the packed layout, the weight forms and the delta math are shared, CPU-tested
code (:mod:`.refit_map`, :mod:`..weights`, :mod:`.weight_forms`, :mod:`.delta_apply`); ``edgetool doctor`` proves
this module on the device against ONNX Runtime.  Built from loader steps (``TrtBackend.from_bundle``, then a
constructor of the pieces, so tests build it with fakes); its engines run in :class:`.runner.EngineRunner`.

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
from typing import TYPE_CHECKING, Callable, Dict, List, Mapping, Optional, cast


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
from .runner import EngineRunner, engine_maker
from .weight_forms import engine_name, host_arrays, weight_form

if TYPE_CHECKING:
    import numpy as np

    from .delta_apply import DeviceDeltaApplier

log = logging.getLogger(__name__)


class TrtBackend(Backend):
    """Built from loader steps: :meth:`from_bundle` reads the model and loads or builds the plan; the constructor
    takes the pieces (TensorRT and pycuda modules, an engine maker, the model's constants, the packed base, the weight
    form), activates the runners and sets up the refitter; :meth:`close` deactivates the runners."""

    name = "tensorrt"

    def __init__(
        self,
        bundle,
        trt,
        cuda,
        make_engine: Callable[[], object],
        constants: Dict[str, "np.ndarray"],
        base: "np.ndarray",
        form: str,
        precision: str = "int8",
        mode: str = "one-engine",
        max_batch: int = 32,
        static: bool = False,
        engine_entry: Optional[Mapping] = None,
        workspace_mb: int = 1024,
    ):
        super().__init__(bundle)
        if mode not in MODES:
            raise UsageError("unknown engine mode {!r}; choose one of {}".format(mode, ", ".join(MODES)))
        self.trt, self.cuda, self.mode, self.workspace_mb = trt, cuda, mode, workspace_mb
        self.version = trt_version(trt)
        self.initializers, self.base, self.form, self.precision = constants, base, form, precision
        self.max_batch, self.engine_entry = max_batch, engine_entry
        self.stream = cuda.Stream()
        io = (bundle.input["name"], bundle.output_name, bundle.input["shape"], bundle.head_width, max_batch)
        self.applier: Optional[DeviceDeltaApplier] = None
        self.sub = EngineRunner(make_engine(), trt, cuda, self.stream, *io, static=static)  # the refittable engine
        self.fixed: Optional[EngineRunner] = None  # two-engine mode: never refitted, the base network
        if mode == "two-engine":
            self.fixed = EngineRunner(make_engine, trt, cuda, self.stream, *io, static=static)
        self.sub_loaded = BASE
        try:
            for runner in self.runners():
                runner.activate()
            self._setup_refitter()
        except Exception:
            self.close()
            raise

    @classmethod
    def from_bundle(
        cls,
        bundle,
        plan: Optional[bytes] = None,
        precision: Optional[str] = None,
        mode: str = "one-engine",
        max_batch: int = 32,
        workspace_mb: int = 1024,
    ) -> "TrtBackend":
        """The backend of *bundle*: *plan*, else the bundle's engine for this device, else one built in memory."""
        if mode not in MODES:
            raise UsageError("unknown engine mode {!r}; choose one of {}".format(mode, ", ".join(MODES)))
        trt = require("tensorrt")
        cuda = require("pycuda.driver")
        require("pycuda.autoinit")
        version = trt_version(trt)
        if version < (8, 2):
            raise DeviceError("TensorRT {} is too old: edgetool needs TensorRT 8.2 or newer".format(trt.__version__))
        model = bundle.base_onnx()
        initializers = read_initializers(model)
        layout = bundle.layout
        build_refit_map(layout, initializers, source=bundle._display("base.onnx"))  # names, dtypes, shapes
        base = layout.pack({t.name: initializers[t.name] for t in layout.tensors})
        entry = None
        if plan is None:
            engines, where = bundle.manifest.get("engines", []), bundle.archive or bundle.root
            entry = select_engine(engines, trt.__version__, gpu_name(), precision, where)
        plan, precision, form = _plan(bundle, model, plan, entry, version, precision, workspace_mb, max_batch)
        max_batch = max_batch if entry is None else int(entry.get("max_batch", max_batch))
        static = bool(entry is not None and entry.get("static_batch"))  # a DLA engine: one batch size
        pieces = (engine_maker(trt, plan), initializers, base, form, precision, mode, max_batch, static, entry)
        return cls(bundle, trt, cuda, *pieces, workspace_mb=workspace_mb)

    def runners(self) -> List[EngineRunner]:
        return [r for r in (self.sub, getattr(self, "fixed", None)) if r is not None]

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

            self.applier = DeviceDeltaApplier(layout, self.base, stream=self.stream)
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
        return self._engine().run(batch)

    def _infer_features(self, batch):
        return self._engine().run(batch, features=True)

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
        """Free the packed weights buffer and deactivate the runners (their context and device buffers)."""
        if getattr(self, "applier", None) is not None:
            cast("DeviceDeltaApplier", self.applier).free()
            self.applier = None
        for runner in self.runners():
            runner.deactivate()


def _plan(bundle, model, plan, entry, version, precision, workspace_mb, max_batch):
    """(plan, precision, weight form): *plan*, else the manifest *entry*'s engine, else one built in memory."""
    form = None
    if plan is None and entry is not None:
        log.info(
            "engine: %s from the bundle (TensorRT %s, %s)", entry["file"], entry.get("tensorrt"), entry.get("device")
        )
        plan = bundle.read_file(entry)
        precision = entry.get("precision", precision)
        form = entry.get("weights")
    precision = precision or "int8"
    form = weight_form(version, precision, form)
    if plan is None:
        log.info("engine: none stored for this device; building one in memory")
        changed = bundle.model.changed  # the recorded refit set (an older bundle's engine refits all)
        plan = build_engine(
            model,
            bundle.input["name"],
            bundle.input["shape"],
            precision,
            workspace_mb=workspace_mb,
            max_batch=max_batch,
            refit_only=None if changed is None else [bundle.layout.by_name[n] for n in changed],
            form=form,
        )
    return plan, precision, form
