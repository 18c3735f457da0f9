"""Quantization-aware training: a thin layer over torch's fake-quantize ops.

TensorRT's explicit-quantization rules, exactly:

* weights: per output channel (axis 0), symmetric, zero-point 0, codes in [-127, 127];
* activations: per tensor, symmetric, zero-point 0, codes in [-128, 127], on the input of
  every conv and fc (one Q/DQ pair per tensor, shared by its consumers).

:class:`QATNet` runs an op list (:mod:`edgetool.toolchain.train.ops` defines every op type: its
tensors, its forward pass, its ONNX nodes and its refittable tensors; QATNet only dispatches
to it).  Each conv is an int8 convolution followed by its BatchNorm; BatchNorm trains in
batch-statistics mode during QAT and is deployed as a per-channel float affine
(``scale = gamma / sqrt(var + eps)``, ``bias = beta - mean * scale``) after the int8
convolution.  The quantization scales are buffers: computed once for the superclass network
(weights: max |w| per output channel; activations: max |x| over calibration batches) and
**frozen** for every subclass fine-tune, so all networks share one int8 grid and deltas are
exact in the code domain.
"""

from __future__ import annotations

from typing import Dict, Iterable, List, Optional

import numpy as np
import torch
import torch.nn as nn

from edgetool.runtime.bundle.weights import TensorSpec

from . import ops as O
from .ops import param_key

W_QMIN, W_QMAX = -127, 127
HEAD_HEADROOM = 2.0  # the fc head's weight grid spans twice the base head's largest weight
A_QMIN, A_QMAX = -128, 127


class QATNet(nn.Module):
    def __init__(self, ops: List[dict], tensors: Dict[str, torch.Tensor], config: dict):
        super().__init__()
        self.ops = O.normalize_all(ops)  # canonical copies; legacy keys (relu: bool) read
        self.config = dict(config)
        self.layers = [layer for layer in (O.entry(op).weight_layer(op) for op in self.ops) if layer is not None]
        self.params = nn.ParameterDict()
        self.bns = nn.ModuleDict()
        for op in self.ops:
            O.entry(op).build(self, op, tensors)
        for name in self.layers:
            self.register_buffer("ws_" + param_key(name), torch.ones(self.weight(name + ".weight").shape[0]))
        self.act_tensors: List[str] = []
        for op in self.ops:
            for t in O.entry(op).act_inputs(op):
                if t not in self.act_tensors:
                    self.act_tensors.append(t)
        for tensor in self.act_tensors:
            self.register_buffer("as_" + tensor, torch.ones(()))
        self.quantize = False
        self.delta_step = 1  # > 1: codes may differ from the base codes (buffers qb_*) only by multiples of it
        self.weight_grad = "clip"  # "clip": zero gradient beyond +-127 codes (torch's default); "ste": straight through
        self._calib: Optional[Dict[str, float]] = None

    # -- scales ---------------------------------------------------------------------------
    def weight(self, name):
        return self.params[param_key(name)]

    def wscale(self, layer):
        return getattr(self, "ws_" + param_key(layer))

    def ascale(self, tensor):
        return getattr(self, "as_" + tensor)

    def head_layers(self) -> List[str]:
        """The classifier head's layers (the fc layers), whose rows share one weight scale."""
        return [op["name"] for op in self.ops if O.entry(op).head]

    @torch.no_grad()
    def set_delta_grid(self, base: "QATNet", step: int) -> None:
        """Let this network's int8 codes differ from *base*'s only by multiples of *step* codes.

        A coarse grid for the delta, not for the weights: the codes stay on the fine int8 grid
        of the frozen scales, but ``q - q_base`` is rounded to a multiple of *step* (then
        clamped to +-127), so moves under step/2 codes return to the base exactly and the
        stored delta takes few distinct values.  Training sees the rounding (straight-through).
        """
        if int(step) < 1:
            raise ValueError("delta step must be >= 1")
        self.delta_step = int(step)
        codes = base.int8_codes()
        for layer in self.layers:
            name = "qb_" + param_key(layer)
            t = torch.from_numpy(codes[layer + ".weight"].astype(np.float32))
            if hasattr(self, name):
                getattr(self, name).copy_(t)
            else:
                self.register_buffer(name, t)

    def _on_delta_grid(self, layer: str, codes: torch.Tensor) -> torch.Tensor:
        """*codes* (exact integers, as floats) moved onto the base's delta grid."""
        if self.delta_step <= 1:
            return codes
        qb = getattr(self, "qb_" + param_key(layer))
        d = torch.round((codes - qb) / self.delta_step) * self.delta_step
        return torch.clamp(qb + d, W_QMIN, W_QMAX)

    @torch.no_grad()
    def init_weight_scales(self, head_headroom: float = HEAD_HEADROOM) -> None:
        """Conv weights: max |w| / 127 per output channel.  The fc head: one scale for every row,
        *head_headroom* x max |w| over the whole head / 127, because each subclass network
        reuses the head's rows for its own classes: a row the base never trained (beyond N) or
        trained for a superclass must still have room to become a subclass's class row.  A
        per-row max would freeze such rows on a grid too fine for them, and a weight beyond
        the grid gets no gradient."""
        fc = self.head_layers()
        for layer in self.layers:
            w = self.weight(layer + ".weight")
            amax = w.abs().reshape(w.shape[0], -1).amax(1).clamp_min(1e-8)
            if layer in fc:
                amax = torch.full_like(amax, float(amax.max()) * head_headroom)
            self.wscale(layer).copy_(amax / W_QMAX)

    @torch.no_grad()
    def calibrate(self, batches: Iterable[torch.Tensor]) -> None:
        """Set activation scales to max |x| / 127 over *batches* (eval mode, weights fake-quantized)."""
        self._calib = {t: 0.0 for t in self.act_tensors}
        was_q, was_train = self.quantize, self.training
        self.quantize = True
        self.eval()
        try:
            for x in batches:
                self.forward(x)
        finally:
            calib, self._calib = self._calib, None
            self.quantize = was_q
            self.train(was_train)
        for t, amax in calib.items():
            self.ascale(t).fill_(max(amax, 1e-8) / A_QMAX)

    # -- forward ----------------------------------------------------------------------------
    def _fq_w(self, layer):
        w = self.weight(layer + ".weight")
        if not self.quantize:
            return w
        s = self.wscale(layer)
        q = torch.fake_quantize_per_channel_affine(w, s, torch.zeros_like(s, dtype=torch.int32), 0, W_QMIN, W_QMAX)
        if self.delta_step > 1:
            sb = s.reshape([-1] + [1] * (w.dim() - 1))
            on_grid = self._on_delta_grid(layer, torch.round(q.detach() / sb)) * sb
            q = q + (on_grid - q.detach())  # straight through the delta rounding
        if self.weight_grad == "ste" and self.training:
            return w + (q - w).detach()  # weights beyond the grid keep a gradient and can come back
        return q

    def _fq_a(self, x, tensor):
        if self._calib is not None:
            self._calib[tensor] = max(self._calib[tensor], float(x.detach().abs().max()))
            return x
        if not self.quantize:
            return x
        return torch.fake_quantize_per_tensor_affine(x, self.ascale(tensor), 0, A_QMIN, A_QMAX)

    def forward(self, x, features: bool = False):
        """Logits; with *features*, (logits, the first global-average pooling's output: the
        exported graph's ``features``)."""
        env = O.Env(x)
        for op in self.ops:
            O.entry(op).forward(self, op, env)
        return (env["logits"], env.pooled[0]) if features else env["logits"]

    # -- deployment tensors ---------------------------------------------------------------------
    @torch.no_grad()
    def int8_codes(self) -> Dict[str, np.ndarray]:
        """The int8 codes this network computes with: clamp(nearbyint(w * (1/s)), -127, 127).

        Same arithmetic as ``fake_quantize_per_channel_affine`` (multiply by the float32
        reciprocal, round half to even), so the codes are exactly those QAT trained.
        """
        out = {}
        for layer in self.layers:
            w = self.weight(layer + ".weight").detach().float()
            inv = (1.0 / self.wscale(layer).float()).reshape([-1] + [1] * (w.dim() - 1))
            q = self._on_delta_grid(layer, torch.clamp(torch.round(w * inv), W_QMIN, W_QMAX))
            out[layer + ".weight"] = q.to(torch.int8).cpu().numpy()
        return out

    @torch.no_grad()
    def float_tensors(self) -> Dict[str, np.ndarray]:
        """Per-channel float tensors: conv ``.scale``/``.bias`` ([C,1,1], BN in eval form), fc ``.bias``."""
        out: Dict[str, np.ndarray] = {}
        for op in self.ops:
            out.update(O.entry(op).float_tensors(self, op))
        return out

    def weight_scales(self) -> Dict[str, np.ndarray]:
        return {layer + ".weight": self.wscale(layer).detach().float().cpu().numpy().copy() for layer in self.layers}

    def act_scales(self) -> Dict[str, float]:
        return {t: float(self.ascale(t)) for t in self.act_tensors}

    # -- what the export side asks for (it never imports the toolchain) -------------------------
    def emit_onnx(self, graph, op: dict) -> None:
        """Emit *op* (one of :attr:`ops`) into the exporter's Q/DQ *graph*."""
        O.entry(op).emit(graph, op)

    def refit_specs(self) -> List[TensorSpec]:
        """Every refittable tensor, in op order (unplaced: :meth:`PackedLayout.build` places them)."""
        codes, floats, scales = self.int8_codes(), self.float_tensors(), self.weight_scales()
        return [spec for op in self.ops for spec in O.entry(op).refit_specs(op, codes, floats, scales)]

    def state(self) -> dict:
        return {"ops": self.ops, "config": self.config, "state_dict": self.state_dict(), "delta_step": self.delta_step}

    @classmethod
    def from_state(cls, state: dict) -> "QATNet":
        sd = state["state_dict"]
        ops = O.normalize_all(state["ops"])
        tensors = {name: sd[key] for op in ops for name, key in O.entry(op).tensors(op)}
        net = cls(ops, tensors, state["config"])
        net.delta_step = int(state.get("delta_step", 1))
        for layer in net.layers:
            if "qb_" + param_key(layer) in sd:
                net.register_buffer("qb_" + param_key(layer), torch.zeros_like(sd["qb_" + param_key(layer)]))
        net.load_state_dict(sd)
        net.quantize = True
        net.eval()
        return net


def from_float(model, calib_batches) -> QATNet:
    """Per-channel weight scales from the float weights, activation scales by calibration."""
    model.eval()
    ops, tensors = model.to_ir()
    net = QATNet(ops, tensors, model.config)
    net.init_weight_scales()
    net.calibrate(calib_batches)
    net.quantize = True
    return net


def code_delta(base: QATNet, sub: QATNet) -> np.ndarray:
    """uint8 ``(q_sub - q_base) mod 256`` of every int8 weight, concatenated in layer order.

    The same wrap-around as the bundle's packed deltas (uint8 subtraction), without the
    layout's alignment padding; used to measure delta sizes and histograms.
    """
    bc, sc = base.int8_codes(), sub.int8_codes()
    return np.concatenate([np.subtract(sc[n].view(np.uint8), bc[n].view(np.uint8)).ravel() for n in bc])
