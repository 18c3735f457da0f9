"""Gated top-k routing: its settings and its rule, one definition for the device and the toolchain.

When the superclass confidence max(p_super) is below ``gate``, the ``k`` most likely
superclasses are each tried and the route with the highest ``p_super ** beta * p_sub`` wins
(``p_sub``: the subclass network's probability of its top class).  ``beta = 1`` is Chennupati
et al.'s equation 2; a smaller ``beta`` trusts the subclass networks more, ``beta = 0`` uses
them alone.

``edgetool export`` chooses ``gate`` and ``beta`` on the run's validation split (the best
accuracy at no more than 0.2 extra subclass-network runs per image) and writes them to the
manifest as ``routing``; the runtime's ``topk`` policy uses them unless ``--gate``, ``--k`` or
``--beta`` say otherwise.  A bundle without ``routing`` gets the defaults below.

Where the validation split is large enough, export also learns a gate and a combiner per pair
of clusters (``routing.learned``, :mod:`.learned_routing`); the ``topk`` policy then follows
them with k = 2, and ``gate`` and ``beta`` serve the pairs without a combiner.  Any of
``--gate``, ``--k`` or ``--beta`` sets the learned router aside for equation 2.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional, Sequence

from . import learned_routing
from ..errors import UsageError
from .names import check, fail, printable

GATE, K, BETA = 0.6, 2, 1.0
MAX_BETA = 16.0


@dataclass(frozen=True)
class Routing:
    gate: float = GATE
    k: int = K
    beta: float = BETA
    chosen_on: str = "default"
    learned: Optional[learned_routing.Learned] = field(default=None, compare=False)

    def to_dict(self) -> dict:
        d = {"gate": self.gate, "k": self.k, "beta": self.beta, "chosen_on": self.chosen_on}
        if self.learned is not None:
            d["learned"] = self.learned.to_dict()
        return d

    def describe(self) -> str:
        """One line for people: the settings and what they were chosen on."""
        text = "gate {:g}, k {}, beta {:g} ({})".format(self.gate, self.k, self.beta, self.chosen_on)
        return text if self.learned is None else "learned: {}; otherwise {}".format(self.learned.describe(), text)


DEFAULT = Routing()


def score(p_super, p_sub, beta: float):
    """How a route competes: p_super^beta x p_sub (numbers or numpy arrays alike)."""
    return p_super**beta * p_sub


def parse(value, n_super: int, sizes: Sequence[int] = ()) -> Optional[Routing]:
    """The manifest's optional ``routing`` object, every field checked (raises ``FieldError``);
    *n_super*: the hierarchy's superclasses, already checked to be 1 or more; *sizes*: the
    classes of each (needed by ``routing.learned``)."""
    if value is None:
        return None
    d = check(value, "routing", dict)
    k = check(d.get("k"), "routing.k", int, 1, n_super)
    learned = None
    if d.get("learned") is not None:
        if k != 2 or len(sizes) != n_super:
            fail("routing.learned", "a learned router needs k = 2 and the hierarchy's class counts")
        learned = learned_routing.parse(d["learned"], sizes)
    return Routing(
        gate=check(d.get("gate"), "routing.gate", float, 0.0, 1.0),
        k=k,
        beta=check(d.get("beta", BETA), "routing.beta", float, 0.0, MAX_BETA),
        chosen_on=printable(d.get("chosen_on", "not stated"), "routing.chosen_on", "text"),
        learned=learned,
    )


def resolve(
    stored: Optional[Routing], gate: Optional[float] = None, k: Optional[int] = None, beta: Optional[float] = None
) -> Routing:
    """The bundle's routing (or the defaults) with any setting the user gave in its place."""
    r = stored or DEFAULT
    given = [n for n, v in (("gate", gate), ("k", k), ("beta", beta)) if v is not None]
    if not given:
        return r
    return Routing(
        gate=r.gate if gate is None else float(gate),
        k=r.k if k is None else int(k),
        beta=r.beta if beta is None else float(beta),
        chosen_on="{}; set by the caller: {}".format(r.chosen_on, ", ".join(given)),
    )


def check_options(gate: Optional[float], k: Optional[int], beta: Optional[float]) -> None:
    """One error line for ``--gate``, ``--k`` or ``--beta`` out of range (None: not given)."""
    if gate is not None and not 0.0 <= gate <= 1.0:
        raise UsageError("--gate must be in [0, 1], got {}".format(gate))
    if k is not None and k < 1:
        raise UsageError("--k must be >= 1, got {}".format(k))
    if beta is not None and not 0.0 <= beta <= MAX_BETA:
        raise UsageError("--beta must be in [0, {:g}], got {}".format(MAX_BETA, beta))
