"""The two flat controls of the fair comparison (:mod:`.bounds`): the flat network trained for
the whole Super-Sub pipeline's image passes, and a wider one at about Super-Sub's FLOPs per
image for the same passes; each QAT int8 as the base is, within those passes."""

from __future__ import annotations

from edgetool.runtime.errors import UsageError

from ..evaluate import bounds, verdict
from . import qat
from . import fit as training
from .checkpoints import float_from_state, float_state


def control_file(run, kind: str, qat_net: bool = False) -> str:
    """Checkpoint of flat control *kind* ("budget" or "wide"); its name holds the epochs (and
    width) it was trained with, so a changed budget never reuses it."""
    epochs = bounds.equal_budget_epochs(run)
    name = "flat-{}-e{}".format(kind, epochs)
    if kind == "wide":
        name = "flat-wide-w{}-e{}".format(bounds.equal_cost_width(run), epochs)
    return run.file("controls", name + ("-qat.pt" if qat_net else ".pt"))


def flat_control(run, kind: str) -> qat.QATNet:
    """The int8 flat control *kind* (:mod:`.bounds`): "budget", the flat network trained for the
    Super-Sub pipeline's image passes; "wide", a wider one at about Super-Sub's FLOPs per image,
    for the same passes.  Each is QAT int8 as the base is, within those passes."""
    if kind not in verdict.KINDS:
        raise UsageError("unknown flat control {!r}".format(kind))
    epochs = bounds.equal_budget_epochs(run) - run.cfg.qat_epochs
    width = run.cfg.width_mult * (bounds.equal_cost_width(run) if kind == "wide" else 1.0)
    what = "equal budget" if kind == "budget" else "equal cost, width x{:g}".format(width)
    desc = "flat control ({})".format(what)
    n = len(run.train.classes)

    def make_float():
        m = run.new_model(n, width)
        recipe = run.recipe(epochs, run.cfg.lr)
        training.fit(m, run.xtr, run.ytr, recipe, seed=run.cfg.seed, hooks=run.hooks(desc))
        return float_state(m)

    def make():
        m = float_from_state(run.stage("flat_" + kind, control_file(run, kind), make_float))
        return run.quantize(m, run.ytr, n, "QAT " + desc).state()

    return qat.QATNet.from_state(run.stage("flat_{}_qat".format(kind), control_file(run, kind, True), make))
