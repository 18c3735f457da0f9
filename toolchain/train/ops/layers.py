"""``add``, ``gap`` and ``fc``."""

from __future__ import annotations

from typing import Any, Dict

import torch
import torch.nn as nn
import torch.nn.functional as F

from .base import Op, act_of, activate, emit_act, float_spec, names_of, param_key, weight_spec


class Add(Op):
    kind = "add"

    def normalize(self, op):
        self._check_keys(op, ("a", "b", "y", "act", "relu"))
        out: Dict[str, Any] = {"op": self.kind}
        out.update(names_of(op, ("a", "b", "y")))
        out["act"] = act_of(op)
        return out

    def reads(self, op):
        return [op["a"], op["b"]]

    def forward(self, net, op, env):
        env[op["y"]] = activate(env[op["a"]] + env[op["b"]], op["act"])

    def emit(self, g, op):
        out = op["y"] + ".pre" if op["act"] else op["y"]
        g.node("Add", [op["a"], op["b"]], [out], name=op["y"] + ".add")
        emit_act(g, op["act"], out, op["y"], op["y"])


class Gap(Op):
    kind = "gap"

    def normalize(self, op):
        self._check_keys(op, ("x", "y"))
        return dict({"op": self.kind}, **names_of(op, ("x", "y")))

    def forward(self, net, op, env):
        env[op["y"]] = torch.flatten(F.adaptive_avg_pool2d(env[op["x"]], 1), 1)
        env.pooled.append(env[op["y"]])

    def emit(self, g, op):
        g.node("GlobalAveragePool", [op["x"]], [op["y"] + ".pool"], name=op["y"] + ".gap")
        g.node("Flatten", [op["y"] + ".pool"], [op["y"]], axis=1, name=op["y"] + ".flatten")
        g.pooled_output(op["y"])


class Fc(Op):
    kind = "fc"
    head = True

    def normalize(self, op):
        self._check_keys(op, ("name", "x", "y"))
        return dict({"op": self.kind}, **names_of(op, ("name", "x", "y")))

    def weight_layer(self, op):
        return op["name"]

    def act_inputs(self, op):
        return [op["x"]]

    def tensors(self, op):
        return [
            ("{}.{}".format(op["name"], k), "params." + param_key("{}.{}".format(op["name"], k)))
            for k in ("weight", "bias")
        ]

    def build(self, net, op, tensors):
        for k in ("weight", "bias"):
            t = tensors["{}.{}".format(op["name"], k)]
            net.params[param_key("{}.{}".format(op["name"], k))] = nn.Parameter(t.clone().float())

    def forward(self, net, op, env):
        xin = net._fq_a(env[op["x"]], op["x"])
        env[op["y"]] = F.linear(xin, net._fq_w(op["name"]), net.weight(op["name"] + ".bias"))

    def float_tensors(self, net, op):
        return {op["name"] + ".bias": net.weight(op["name"] + ".bias").detach().float().cpu().numpy().copy()}

    def emit(self, g, op):
        x, w = g.act_dq(op["x"]), g.weight_dq(op["name"])
        g.node("Gemm", [x, w, g.float_init(op["name"] + ".bias")], [op["y"]], transB=1, name=op["name"])
        g.reads_features(op["x"], op["name"] + ".weight")

    def refit_specs(self, op, codes, floats, scales):
        return [weight_spec(op["name"], codes, scales)] + float_spec(op["name"] + ".bias", "bias", floats)
