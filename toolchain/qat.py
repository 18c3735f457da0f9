"""Quantization-aware training: a thin layer over torch's fake-quantize ops.

TensorRT's explicit-quantization rules, exactly:

* weights: per output channel (axis 0), symmetric, zero-point 0, codes in [-127, 127];
* activations: per tensor, symmetric, zero-point 0, codes in [-128, 127], on the input of
  every conv and fc (one Q/DQ pair per tensor, shared by its consumers);
* biases stay float32; BatchNorm is folded before QAT starts.

:class:`QATNet` runs the folded op list of :mod:`edgetool.toolchain.models`.  Its scales
are buffers: computed once for the superclass network (weights: max |w| per channel;
activations: max |x| over calibration batches) and then **frozen** for every subclass
fine-tune, so ``q = round(w / s)`` of all networks share one grid and deltas are exact
in the int8 code domain.
"""
from __future__ import annotations

import copy
from typing import Dict, Iterable, List

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

W_QMIN, W_QMAX = -127, 127
A_QMIN, A_QMAX = -128, 127


def _key(name: str) -> str:
    return name.replace(".", "__")


class QATNet(nn.Module):
    def __init__(self, ops: List[dict], weights: Dict[str, torch.Tensor], config: dict):
        super().__init__()
        self.ops = copy.deepcopy(ops)
        self.config = dict(config)
        self.names = list(weights.keys())
        self.params = nn.ParameterDict({_key(n): nn.Parameter(w.clone().float()) for n, w in weights.items()})
        # Per-channel weight scales, one per weight tensor.
        for n in self.names:
            if n.endswith(".weight"):
                self.register_buffer("ws_" + _key(n), torch.ones(weights[n].shape[0]))
        # Per-tensor activation scales, one per tensor consumed by a conv/fc.
        self.act_tensors = []
        for op in self.ops:
            if op["op"] in ("conv", "fc") and op["x"] not in self.act_tensors:
                self.act_tensors.append(op["x"])
        for t in self.act_tensors:
            self.register_buffer("as_" + t, torch.ones(()))
        self.quantize = False
        self._calib = None

    # -- scales ---------------------------------------------------------------------------
    def weight(self, name):
        return self.params[_key(name)]

    def wscale(self, name):
        return getattr(self, "ws_" + _key(name))

    def ascale(self, tensor):
        return getattr(self, "as_" + tensor)

    @torch.no_grad()
    def init_weight_scales(self) -> None:
        for n in self.names:
            if n.endswith(".weight"):
                w = self.weight(n)
                amax = w.abs().reshape(w.shape[0], -1).amax(1).clamp_min(1e-8)
                self.wscale(n).copy_(amax / W_QMAX)

    @torch.no_grad()
    def calibrate(self, batches: Iterable[torch.Tensor]) -> None:
        """Set activation scales to max |x| / 127 over *batches* (weights fake-quantized)."""
        self._calib = {t: 0.0 for t in self.act_tensors}
        was_q = self.quantize
        self.quantize = True
        try:
            for x in batches:
                self.forward(x)
        finally:
            calib, self._calib = self._calib, None
            self.quantize = was_q
        for t, amax in calib.items():
            self.ascale(t).fill_(max(amax, 1e-8) / A_QMAX)

    # -- forward ----------------------------------------------------------------------------
    def _fq_w(self, name):
        w = self.weight(name)
        if not self.quantize:
            return w
        s = self.wscale(name)
        return torch.fake_quantize_per_channel_affine(w, s, torch.zeros_like(s, dtype=torch.int32), 0, W_QMIN, W_QMAX)

    def _fq_a(self, x, tensor):
        if self._calib is not None:
            self._calib[tensor] = max(self._calib[tensor], float(x.detach().abs().max()))
            return x
        if not self.quantize:
            return x
        return torch.fake_quantize_per_tensor_affine(x, self.ascale(tensor), 0, A_QMIN, A_QMAX)

    def forward(self, x):
        env = {"input": x}
        for op in self.ops:
            kind = op["op"]
            if kind == "conv":
                xin = self._fq_a(env[op["x"]], op["x"])
                y = F.conv2d(xin, self._fq_w(op["name"] + ".weight"), self.weight(op["name"] + ".bias"),
                             op["stride"], op["pad"])
                env[op["y"]] = F.relu(y) if op["relu"] else y
            elif kind == "maxpool":
                env[op["y"]] = F.max_pool2d(env[op["x"]], op["k"], op["stride"], op["pad"])
            elif kind == "add":
                y = env[op["a"]] + env[op["b"]]
                env[op["y"]] = F.relu(y) if op["relu"] else y
            elif kind == "gap":
                env[op["y"]] = torch.flatten(F.adaptive_avg_pool2d(env[op["x"]], 1), 1)
            elif kind == "fc":
                xin = self._fq_a(env[op["x"]], op["x"])
                env[op["y"]] = F.linear(xin, self._fq_w(op["name"] + ".weight"), self.weight(op["name"] + ".bias"))
            else:
                raise ValueError("unknown op {}".format(kind))
        return env["logits"]

    # -- freezing ---------------------------------------------------------------------------
    def freeze_scales(self) -> None:
        for name, buf in self.named_buffers():
            buf.requires_grad_(False)

    # -- int8 export --------------------------------------------------------------------------
    @torch.no_grad()
    def int8_codes(self) -> Dict[str, np.ndarray]:
        """The int8 codes this network computes with: clamp(nearbyint(w * (1/s)), -127, 127).

        Same arithmetic as ``fake_quantize_per_channel_affine`` (multiply by the float32
        reciprocal, round half to even), so the codes are exactly those QAT trained.
        """
        out = {}
        for n in self.names:
            if n.endswith(".weight"):
                w = self.weight(n).detach().float()
                inv = (1.0 / self.wscale(n).float()).reshape([-1] + [1] * (w.dim() - 1))
                q = torch.clamp(torch.round(w * inv), W_QMIN, W_QMAX)
                out[n] = q.to(torch.int8).cpu().numpy()
        return out

    def biases(self) -> Dict[str, np.ndarray]:
        return {n: self.weight(n).detach().float().cpu().numpy().copy() for n in self.names if n.endswith(".bias")}

    def weight_scales(self) -> Dict[str, np.ndarray]:
        return {n: self.wscale(n).detach().float().cpu().numpy().copy() for n in self.names if n.endswith(".weight")}

    def act_scales(self) -> Dict[str, float]:
        return {t: float(self.ascale(t)) for t in self.act_tensors}

    def state(self) -> dict:
        return {"ops": self.ops, "config": self.config, "names": self.names, "state_dict": self.state_dict()}

    @classmethod
    def from_state(cls, state: dict) -> "QATNet":
        weights = {n: state["state_dict"]["params." + _key(n)] for n in state["names"]}
        net = cls(state["ops"], weights, state["config"])
        net.load_state_dict(state["state_dict"])
        net.quantize = True
        return net


def from_float(model, calib_batches) -> QATNet:
    """Fold BN, set frozen per-channel weight scales, calibrate activation scales."""
    model.eval()
    ops, weights = model.to_ir()
    net = QATNet(ops, weights, model.config)
    net.init_weight_scales()
    net.calibrate(calib_batches)
    net.quantize = True
    return net
