"""Windowed ops: ``conv`` (int8 convolution, BatchNorm, activation) and ``maxpool``."""

from __future__ import annotations

from typing import Any, Dict

import torch
import torch.nn as nn
import torch.nn.functional as F

from edgetool.runtime.errors import UsageError

from .base import BN_KEYS, Op, act_of, activate, check_int, emit_act, float_spec, names_of, param_key, torch_pad
from .base import weight_spec, where, window


class Conv(Op):
    kind = "conv"
    KEYS = ("name", "x", "y", "k", "stride", "pad", "groups", "act", "relu", "eps")

    def normalize(self, op):
        self._check_keys(op, self.KEYS)
        out: Dict[str, Any] = {"op": self.kind}
        out.update(names_of(op, ("name", "x", "y")))
        out.update(window(op))
        out["groups"] = check_int(op, "groups", op.get("groups", 1), 1)
        out["act"] = act_of(op)
        eps = op.get("eps", 1e-5)
        if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not eps > 0:
            raise UsageError("{}: eps must be a number > 0, got {!r}".format(where(op), eps))
        out["eps"] = float(eps)
        return out

    def weight_layer(self, op):
        return op["name"]

    def act_inputs(self, op):
        return [op["x"]]

    def tensors(self, op):
        n = op["name"]
        own = [(n + ".weight", "params." + param_key(n + ".weight"))]
        return own + [("{}.bn.{}".format(n, k), "bns.{}.{}".format(param_key(n), k)) for k in BN_KEYS]

    def build(self, net, op, tensors):
        n = op["name"]
        w = tensors[n + ".weight"]
        kh, kw = op["k"]
        if w.dim() != 4 or tuple(w.shape[2:]) != (kh, kw) or w.shape[0] % op["groups"]:
            raise UsageError(
                "{}: weight of shape {} is not [C_out, C_in/{}, {}, {}] with C_out a multiple of groups".format(
                    where(op), list(w.shape), op["groups"], kh, kw
                )
            )
        net.params[param_key(n + ".weight")] = nn.Parameter(w.clone().float())
        bn = nn.BatchNorm2d(w.shape[0], eps=op["eps"])
        with torch.no_grad():
            for k in BN_KEYS:
                getattr(bn, k).copy_(tensors["{}.bn.{}".format(n, k)])
        net.bns[param_key(n)] = bn

    def forward(self, net, op, env):
        x, padding = torch_pad(net._fq_a(env[op["x"]], op["x"]), op["pad"])
        y = F.conv2d(x, net._fq_w(op["name"]), None, op["stride"], padding, 1, op["groups"])
        env[op["y"]] = activate(net.bns[param_key(op["name"])](y), op["act"])

    def float_tensors(self, net, op):
        bn = net.bns[param_key(op["name"])]
        scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
        bias = bn.bias - bn.running_mean * scale
        return {
            op["name"] + ".scale": scale.float().reshape(-1, 1, 1).cpu().numpy().copy(),
            op["name"] + ".bias": bias.float().reshape(-1, 1, 1).cpu().numpy().copy(),
        }

    def emit(self, g, op):
        n = op["name"]
        x, w = g.act_dq(op["x"]), g.weight_dq(n)
        out = op["y"] + ".pre" if op["act"] else op["y"]
        attrs: Dict[str, Any] = dict(kernel_shape=list(op["k"]), strides=list(op["stride"]), pads=list(op["pad"]))
        if op["groups"] != 1:
            attrs["group"] = op["groups"]
        g.node("Conv", [x, w], [n + ".conv"], name=n, **attrs)
        g.node("Mul", [n + ".conv", g.float_init(n + ".scale")], [n + ".scaled"], name=n + ".bn_scale")
        g.node("Add", [n + ".scaled", g.float_init(n + ".bias")], [out], name=n + ".bn_bias")
        emit_act(g, op["act"], out, op["y"], n)

    def refit_specs(self, op, codes, floats, scales):
        n = op["name"]
        return (
            [weight_spec(n, codes, scales)]
            + float_spec(n + ".scale", "scale", floats)
            + float_spec(n + ".bias", "bias", floats)
        )


class MaxPool(Op):
    kind = "maxpool"

    def normalize(self, op):
        self._check_keys(op, ("x", "y", "k", "stride", "pad"))
        out: Dict[str, Any] = {"op": self.kind}
        out.update(names_of(op, ("x", "y")))
        out.update(window(op))
        return out

    def forward(self, net, op, env):
        x, padding = torch_pad(env[op["x"]], op["pad"], float("-inf"))
        env[op["y"]] = F.max_pool2d(x, op["k"], op["stride"], padding)

    def emit(self, g, op):
        g.node(
            "MaxPool",
            [op["x"]],
            [op["y"]],
            kernel_shape=list(op["k"]),
            strides=list(op["stride"]),
            pads=list(op["pad"]),
            name=op["y"] + ".maxpool",
        )
