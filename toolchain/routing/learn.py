"""Learning gated top-2's gate and pair combiners (:mod:`edgetool.runtime.bundle.learned_routing`).

From per-image log outputs on a validation split (the superclass network's log p_super, and
each subclass network's log-softmax with its "not mine" column):

* the **gate** is either the superclass network's top probability, or a logistic regression
  on :func:`~edgetool.runtime.bundle.learned_routing.gate_features`, fitted to "the first answer is
  wrong and the true class lies in the second route's cluster"; it fires on the images it
  scores highest, at a chosen share of the images (its threshold);
* for each pair of clusters with at least :data:`MIN_PAIR` gated images of its classes, a
  **combiner** (multinomial logistic regression, or one hidden layer of 16) maps
  ``[log p_super, log q_a, log q_b]`` to the pair's classes, and where the evidence holds the
  subclass networks' pooled features, optionally those too (``[..., f_a, f_b]``).

The gate kind, the combiner kind, its inputs and the share gated (at most 0.19, within the 0.2
extra switches per image that routing is chosen under) are chosen by 2-fold cross-fitted
accuracy, then refitted on the whole split.  :func:`replay` runs the result exactly as the runtime's
``topk`` policy does.
"""

from __future__ import annotations

import itertools
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from edgetool.runtime.bundle.learned_routing import GATE_FEATURES, Learned, Model, gate_features, with_not_mine

RATES = tuple(float(r) for r in np.round(np.arange(0.03, 0.191, 0.02), 2))
COMBINERS = {"logistic": 0, "one hidden layer of 16": 16}
GATE_KINDS = ("top-probability", "learned")
INPUTS = ("outputs", "outputs and features")  # what a pair combiner takes in
MIN_PAIR = 30  # gated images of a pair's classes its combiner is fitted on, at least
MIN_IMAGES = 2000  # validation images export learns a router on, at least


def _answers(lq, members, route: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """(answer, log q of it) per image of the subclass network of its *route*."""
    answer, top = np.zeros(len(route), dtype=np.int64), np.zeros(len(route))
    for k, m in enumerate(members):
        idx = np.nonzero(route == k)[0]
        own = lq[k][idx, : len(m)]
        answer[idx], top[idx] = np.asarray(m)[own.argmax(1)], own.max(1)
    return answer, top


def evidence(lp: np.ndarray, lq: Sequence[np.ndarray], y: np.ndarray, members, local: np.ndarray, pooled=None) -> dict:
    """Per image: log p_super (*lp*), each subclass network's log output with its "not mine"
    column (*lq*) and, where given, its pooled features (*pooled*), the two routes and their
    answers, the gate's features and whether a second route could recover the first answer.
    *local*: class -> position in each cluster (-1: none)."""
    rows = np.arange(len(y))
    order = np.argsort(-lp, axis=1, kind="stable")
    r1, r2 = order[:, 0], order[:, 1]
    feats = np.zeros((len(y), GATE_FEATURES))
    for k, m in enumerate(members):
        idx = np.nonzero(r1 == k)[0]
        feats[idx] = gate_features(lp[idx, k], lp[idx, r2[idx]], lq[k][idx], len(m))
    first, top1 = _answers(lq, members, r1)
    second, top2 = _answers(lq, members, r2)
    return {
        "lp": lp,
        "lq": list(lq),
        "feat": None if pooled is None else [np.asarray(f, dtype=np.float64) for f in pooled],
        "y": np.asarray(y),
        "r1": r1,
        "r2": r2,
        "first": first,
        "second": second,
        "log_q": np.stack([top1, top2], 1),  # the two routes' log p_sub of their answers
        "stage1": local[r1, y] < 0,
        "gate": feats,
        "p_max": np.exp(lp[rows, r1]),
        "recoverable": (first != y) & (local[r2, y] >= 0),
        "members": [np.asarray(m) for m in members],
    }


def from_logits(run, zp, zq, y, pooled=None) -> dict:
    """The :func:`evidence` of a run's networks from their valid logits (float64 tensors) and,
    where given, the subclass networks' pooled features."""
    import torch

    lq = [with_not_mine(torch.log_softmax(z, 1).numpy(), len(s)) for z, s in zip(zq, run.hier.subclasses)]
    members = run.hier.members(run.train.classes)
    return evidence(torch.log_softmax(zp, 1).numpy(), lq, np.asarray(y), members, run.data.local, pooled)


def subset(ev: dict, idx) -> dict:
    """The evidence of images *idx*: every per-image array, also inside a dict of them (members
    shared)."""

    def take(v):
        if isinstance(v, dict):
            return {k: take(x) for k, x in v.items()}
        return v[idx] if isinstance(v, np.ndarray) else v

    out = {k: take(v) for k, v in ev.items()}
    out["lq"] = [q[idx] for q in ev["lq"]]
    if ev.get("feat") is not None:
        out["feat"] = [f[idx] for f in ev["feat"]]
    return out


def _lbfgs(params, loss_of, max_iter: int) -> None:
    import torch

    opt = torch.optim.LBFGS(params, max_iter=max_iter)

    def closure():
        opt.zero_grad()
        loss = loss_of()
        loss.backward()
        return loss

    opt.step(closure)


def fit_logistic(features: np.ndarray, target: np.ndarray) -> Model:
    """A logistic regression (standardised features, zero start, L2 on the weights) as a
    one-output :class:`Model` of the log-odds."""
    import torch

    x = torch.tensor(features, dtype=torch.float64)
    t = torch.tensor(target, dtype=torch.float64)
    mu, sd = x.mean(0), x.std(0) + 1e-9
    w = torch.zeros(x.shape[1] + 1, dtype=torch.float64, requires_grad=True)

    def loss():
        z = ((x - mu) / sd) @ w[:-1] + w[-1]
        return torch.nn.functional.binary_cross_entropy_with_logits(z, t) + 1e-3 * (w[:-1] ** 2).sum()

    _lbfgs([w], loss, 200)
    wn = w.detach().numpy()
    return Model(mu.numpy().copy(), sd.numpy().copy(), ((wn[None, :-1].copy(), wn[-1:].copy()),))


def fit_gate(ev: dict, kind: str) -> Optional[Model]:
    """The gate of *kind*: None for "top-probability"; for "learned", :func:`fit_logistic` of
    the gate's features to ``recoverable``."""
    return None if kind == "top-probability" else fit_logistic(ev["gate"], ev["recoverable"])


def fit_combiner(x: np.ndarray, t: np.ndarray, n_out: int, hidden: int, l2: float = 1e-3, seed: int = 0) -> Model:
    """Multinomial logistic regression (*hidden* = 0) or one hidden layer of *hidden*, on
    standardised *x*, fitted with LBFGS (cross-entropy and a little L2)."""
    import torch

    xt, target = torch.tensor(x, dtype=torch.float64), torch.tensor(t)
    mu, sd = xt.mean(0), xt.std(0) + 1e-9
    torch.manual_seed(seed)
    net: torch.nn.Module = torch.nn.Linear(x.shape[1], hidden or n_out)
    if hidden:
        net = torch.nn.Sequential(net, torch.nn.ReLU(), torch.nn.Linear(hidden, n_out))
    net = net.double()

    def loss():
        ce = torch.nn.functional.cross_entropy(net((xt - mu) / sd), target)
        return ce + l2 * sum((p**2).sum() for p in net.parameters())

    _lbfgs(list(net.parameters()), loss, 300)
    dense = [m for m in net.modules() if isinstance(m, torch.nn.Linear)]
    weights = tuple((m.weight.detach().numpy().copy(), m.bias.detach().numpy().copy()) for m in dense)
    return Model(mu.numpy().copy(), sd.numpy().copy(), weights)


def gate_scores(gate: Optional[Model], ev: dict) -> np.ndarray:
    """The gate's score per image, higher firing first (None: the top-probability gate)."""
    return -ev["p_max"] if gate is None else gate(ev["gate"])[:, 0]


def pair_inputs(ev: dict, idx, a: int, b: int, features: bool = False) -> np.ndarray:
    """A pair combiner's inputs on images *idx*: the superclass log-probabilities and both
    subclass networks' log outputs (and both pooled features, with *features*)."""
    parts = [ev["lp"][idx], ev["lq"][a][idx], ev["lq"][b][idx]]
    return np.concatenate(parts + ([ev["feat"][a][idx], ev["feat"][b][idx]] if features else []), 1)


# (evidence, image indices, cluster a, cluster b, with features) -> a pair combiner's inputs
PairInputs = Callable[[dict, np.ndarray, int, int, bool], np.ndarray]


def inputs_of(ev: dict) -> Tuple[str, ...]:
    """The combiner inputs *ev* allows: features only where it holds them."""
    return INPUTS if ev.get("feat") is not None else INPUTS[:1]


def pair_of(ev: dict, a: int, b: int) -> np.ndarray:
    return ((ev["r1"] == a) & (ev["r2"] == b)) | ((ev["r1"] == b) & (ev["r2"] == a))


def fit_combiners(
    ev: dict, fire: np.ndarray, hidden: int, features: bool = False, make_inputs: PairInputs = pair_inputs
) -> Dict[Tuple[int, int], Model]:
    """One model per pair of clusters, fitted on the gated images whose class is in the pair
    (its inputs made by *make_inputs*, :func:`pair_inputs` unless an experiment tries others)."""
    members, models = ev["members"], {}
    for a in range(len(members)):
        for b in range(a + 1, len(members)):
            cands = list(members[a]) + list(members[b])
            idx = np.nonzero(fire & pair_of(ev, a, b) & np.isin(ev["y"], cands))[0]
            if len(idx) < MIN_PAIR:
                continue
            t = np.array([cands.index(c) for c in ev["y"][idx]])
            models[(a, b)] = fit_combiner(make_inputs(ev, idx, a, b, features), t, len(cands), hidden)
    return models


def fit(
    ev: dict,
    gate: Optional[Model],
    hidden: int,
    rate: float,
    features: bool = False,
    make_inputs: PairInputs = pair_inputs,
) -> Learned:
    """The threshold firing on a share *rate* of *ev*'s images under *gate* (fitted on *ev*),
    and the combiners fitted on the images it fires on (taking in the features too, with
    *features*)."""
    s = gate_scores(gate, ev)
    threshold = float(np.quantile(s, 1.0 - rate))
    width = int(ev["feat"][0].shape[1]) if features else 0
    return Learned(gate, threshold, fit_combiners(ev, s > threshold, hidden, features, make_inputs), width)


def replay(
    learned: Learned, ev: dict, beta: Optional[float], make_inputs: PairInputs = pair_inputs
) -> Tuple[np.ndarray, np.ndarray]:
    """(answer, gate fired) per image, as the runtime's ``topk`` policy gives them; a pair without
    a combiner keeps equation 2 with *beta* (None: keeps the first answer)."""
    fire = gate_scores(learned.gate, ev) > learned.threshold
    pred = ev["first"].copy()
    if beta is not None:  # equation 2, in logs: beta log p_super + log p_sub
        rows = np.arange(len(pred))
        s = beta * np.stack([ev["lp"][rows, ev["r1"]], ev["lp"][rows, ev["r2"]]], 1) + ev["log_q"]
        take = fire & (s[:, 1] > s[:, 0])
        pred[take] = ev["second"][take]
    members = ev["members"]
    for (a, b), model in learned.pairs.items():
        idx = np.nonzero(fire & pair_of(ev, a, b))[0]
        if len(idx):
            x = make_inputs(ev, idx, a, b, learned.features > 0)
            pred[idx] = np.concatenate([members[a], members[b]])[model(x).argmax(1)]
    return pred, fire


def outcome(ev: dict, fire: np.ndarray, pred: np.ndarray) -> dict:
    right, top1 = pred == ev["y"], ev["first"] == ev["y"]
    n_err = int(ev["stage1"].sum())
    return {
        "accuracy": float(right.mean()),
        "top1_accuracy": float(top1.mean()),
        "stage1_errors": n_err,
        "recovered": int((ev["stage1"] & right).sum()),
        "recovered_fraction": float((ev["stage1"] & right).sum() / max(1, n_err)),
        "lost": int((top1 & ~right).sum()),
        "extra_switches_per_image": float(fire.mean()),
    }


def choose(
    ev: dict, beta: Optional[float], folds: int = 2, seed: int = 0, make_inputs: PairInputs = pair_inputs
) -> Tuple[dict, List[dict]]:
    """Every gate kind x combiner x combiner inputs x rate, scored by cross-fitted accuracy on
    *ev* (each fold's split and gate fitted once); (the best, the table)."""
    fold = np.random.default_rng(seed).permutation(len(ev["y"])) % folds
    splits = [(subset(ev, fold != f), subset(ev, fold == f)) for f in range(folds)]
    n, table = len(ev["y"]), []
    for gate_kind in GATE_KINDS:
        gates = [fit_gate(fit_on, gate_kind) for fit_on, _ in splits]
        for (name, hidden), inputs, rate in itertools.product(COMBINERS.items(), inputs_of(ev), RATES):
            runs = []
            for (fit_on, held), g in zip(splits, gates):
                learned = fit(fit_on, g, hidden, rate, inputs != INPUTS[0], make_inputs)
                pred, fire = replay(learned, held, beta, make_inputs)
                runs.append((outcome(held, fire, pred), len(held["y"])))
            table.append(
                {
                    "gate": gate_kind,
                    "combiner": name,
                    "inputs": inputs,
                    "rate": rate,
                    "cross_fitted_accuracy": sum(r["accuracy"] * m for r, m in runs) / n,
                    "cross_fitted_switches": sum(r["extra_switches_per_image"] * m for r, m in runs) / n,
                }
            )
    return max(table, key=lambda r: r["cross_fitted_accuracy"]), table


def learn(ev: dict, beta: Optional[float]) -> Tuple[Learned, dict]:
    """The router chosen by :func:`choose`, refitted on all of *ev*; (it, the choice)."""
    best, _ = choose(ev, beta)
    gate, hidden = fit_gate(ev, best["gate"]), COMBINERS[best["combiner"]]
    return fit(ev, gate, hidden, best["rate"], best["inputs"] != INPUTS[0]), best
