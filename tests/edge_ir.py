"""Small hand-built op lists with what EfficientNet-Lite needs from the IR (depthwise convs, ReLU6,
TF-style asymmetric 'same' pads, 1x1 expand/project convs, a residual add without activation),
random tensors for them, and a plain torch reference that reads the op dicts on its own."""

import torch
import torch.nn.functional as F

SHAPE = (3, 16, 16)
HEAD = 5


def mbconv_ops():
    """Two MBConv-style blocks between a stride-2 stem and a 1x1 head conv (shapes for 16x16 inputs)."""
    ops = [
        dict(op="conv", name="stem", x="input", y="t1", k=3, stride=2, pad=[0, 0, 1, 1], act="relu6"),  # 16 -> 8
        dict(op="conv", name="b1.expand", x="t1", y="t2", k=1, act="relu6"),
        dict(op="conv", name="b1.dw", x="t2", y="t3", k=3, stride=2, pad=[0, 0, 1, 1], groups=16, act="relu6"),  # -> 4
        dict(op="conv", name="b1.project", x="t3", y="t4", k=1),
        dict(op="conv", name="b2.expand", x="t4", y="t5", k=1, act="relu6"),
        dict(op="conv", name="b2.dw", x="t5", y="t6", k=5, pad=2, groups=16, act="relu6"),
        dict(op="conv", name="b2.project", x="t6", y="t7", k=1, act=None),
        dict(op="add", a="t7", b="t4", y="t8"),  # the residual: no activation
        dict(op="conv", name="head", x="t8", y="t9", k=1, act="relu6"),
        dict(op="gap", x="t9", y="t10"),
        dict(op="fc", name="fc", x="t10", y="logits"),
    ]
    shapes = {
        "stem": (8, 3, 3, 3),
        "b1.expand": (16, 8, 1, 1),
        "b1.dw": (16, 1, 3, 3),
        "b1.project": (8, 16, 1, 1),
        "b2.expand": (16, 8, 1, 1),
        "b2.dw": (16, 1, 5, 5),
        "b2.project": (8, 16, 1, 1),
        "head": (24, 8, 1, 1),
        "fc": (HEAD, 24),
    }
    return ops, shapes


def other_forms_ops():
    """The other new forms: a [1, 3] kernel, an asymmetric max pool, a grouped (not depthwise) conv, a
    depthwise 5x5/2 with TF 'same' pads [1, 1, 2, 2], and the legacy ``relu: bool`` key."""
    ops = [
        dict(op="conv", name="c1", x="input", y="t1", k=[1, 3], stride=1, pad=[0, 1, 0, 1], relu=True),
        dict(op="maxpool", x="t1", y="t2", k=3, stride=2, pad=[0, 0, 1, 1]),  # 16 -> 8
        dict(op="conv", name="c2", x="t2", y="t3", k=3, stride=1, pad=1, groups=2, relu=False),
        dict(op="add", a="t3", b="t2", y="t4", relu=True),
        dict(op="conv", name="c3", x="t4", y="t5", k=5, stride=[2, 2], pad=[1, 1, 2, 2], groups=8, act="relu6"),
        dict(op="gap", x="t5", y="t6"),
        dict(op="fc", name="fc", x="t6", y="logits"),
    ]
    shapes = {"c1": (8, 3, 1, 3), "c2": (8, 4, 3, 3), "c3": (8, 1, 5, 5), "fc": (HEAD, 8)}
    return ops, shapes


NETS = {"mbconv": mbconv_ops, "other-forms": other_forms_ops}


def tensors(ops, shapes, seed=0):
    """Random conv weights (He-scaled), non-trivial BatchNorm states, an fc layer."""
    g = torch.Generator().manual_seed(seed)

    def randn(*shape, scale=1.0):
        return torch.randn(*shape, generator=g) * scale

    def uniform(n, lo, hi):
        return lo + (hi - lo) * torch.rand(n, generator=g)

    out = {}
    for op in ops:
        if op["op"] == "conv":
            n, shape = op["name"], shapes[op["name"]]
            out[n + ".weight"] = randn(*shape, scale=(2.0 / (shape[1] * shape[2] * shape[3])) ** 0.5)
            c = shape[0]
            out[n + ".bn.weight"] = uniform(c, 0.5, 1.5)
            out[n + ".bn.bias"] = randn(c, scale=0.1)
            out[n + ".bn.running_mean"] = randn(c, scale=0.1)
            out[n + ".bn.running_var"] = uniform(c, 0.5, 1.5)
        elif op["op"] == "fc":
            out[op["name"] + ".weight"] = randn(*shapes[op["name"]], scale=0.3)
            out[op["name"] + ".bias"] = randn(shapes[op["name"]][0], scale=0.1)
    return out


def _pair(v):
    return list(v) if isinstance(v, (list, tuple)) else [v, v]


def _pads(v):
    return list(v) if isinstance(v, (list, tuple)) else [v] * 4


def _act(y, op):
    act = op.get("act", "relu" if op.get("relu") else None)
    if act == "relu":
        return torch.clamp(y, min=0.0)
    if act == "relu6":
        return torch.clamp(y, 0.0, 6.0)
    assert act is None
    return y


def reference(ops, t, x):
    """(logits, features) of the op list in plain torch: explicit F.pad (left, right, top, bottom) then
    an unpadded F.conv2d with groups, BatchNorm in eval form, clamp for the activations."""
    env = {"input": x}
    pooled = []
    for op in ops:
        if op["op"] in ("conv", "maxpool"):
            top, left, bottom, right = _pads(op.get("pad", 0))
            value = 0.0 if op["op"] == "conv" else float("-inf")
            xp = F.pad(env[op["x"]], (left, right, top, bottom), value=value)
            stride = _pair(op.get("stride", 1))
            if op["op"] == "maxpool":
                env[op["y"]] = F.max_pool2d(xp, _pair(op["k"]), stride)
                continue
            n = op["name"]
            y = F.conv2d(xp, t[n + ".weight"], None, stride, 0, 1, op.get("groups", 1))
            y = F.batch_norm(
                y, t[n + ".bn.running_mean"], t[n + ".bn.running_var"], t[n + ".bn.weight"], t[n + ".bn.bias"], eps=1e-5
            )
            env[op["y"]] = _act(y, op)
        elif op["op"] == "add":
            env[op["y"]] = _act(env[op["a"]] + env[op["b"]], op)
        elif op["op"] == "gap":
            env[op["y"]] = env[op["x"]].mean((2, 3))
            pooled.append(env[op["y"]])
        elif op["op"] == "fc":
            env[op["y"]] = env[op["x"]] @ t[op["name"] + ".weight"].T + t[op["name"] + ".bias"]
    return env["logits"], pooled[0]


def qat_net(name, seed=0, n=16):
    """(QATNet in int8 eval mode: per-channel weight scales, activation scales calibrated on *n*
    random images, and those images)."""
    from edgetool.toolchain.train.qat import QATNet

    ops, shapes = NETS[name]()
    net = QATNet(ops, tensors(ops, shapes, seed), {"arch": name})
    x = torch.rand(n, *SHAPE, generator=torch.Generator().manual_seed(seed + 1)) * 2 - 1
    net.eval()
    net.init_weight_scales()
    net.calibrate([x])
    net.quantize = True
    return net, x
