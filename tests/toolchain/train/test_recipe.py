"""The training recipe: head scales, weight gradients, base from the flat trunk, one fine-tune
recipe for vanilla and QAT, and the bounds' definitions (the delta budget: test_delta_budget.py)."""

import copy

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from edgetool.toolchain.evaluate import bounds as B  # noqa: E402
from edgetool.toolchain.train import qat as Q  # noqa: E402
from edgetool.toolchain.train import fit as T  # noqa: E402
from edgetool.toolchain.train.delta_budget import ProximalStep  # noqa: E402
from edgetool.toolchain.train.run import Run, TrainConfig  # noqa: E402
from qat_pairs import _qat_pair  # noqa: E402


def test_head_rows_share_one_scale_with_headroom():
    """Every fc row gets the same grid, twice the base head's largest weight: a row the base
    trained for a superclass (or never trained) can become any subclass's class row."""
    base, _ = _qat_pair(4)
    s = base.wscale("fc")
    w = base.weight("fc.weight").detach()
    assert torch.all(s == s[0])
    torch.testing.assert_close(s[0], w.abs().max() * Q.HEAD_HEADROOM / Q.W_QMAX)
    stem = base.wscale("stem")
    torch.testing.assert_close(stem, base.weight("stem.weight").detach().abs().reshape(16, -1).amax(1) / Q.W_QMAX)


def test_ste_weight_grad_reaches_weights_beyond_the_grid():
    base, net = _qat_pair(3)
    w = net.weight("stem.weight")
    with torch.no_grad():
        w[0, 0, 0, 0] = 10.0  # far beyond +-127 codes
    x = torch.randn(4, 1, 28, 28)
    net.train()
    for mode, nonzero in (("clip", False), ("ste", True)):
        net.weight_grad = mode
        net.zero_grad()
        net(x).sum().backward()
        assert (w.grad[0, 0, 0, 0].abs() > 0).item() is nonzero, mode


@pytest.fixture(scope="module")
def recipe_run(tmp_path_factory):
    cfg = TrainConfig(
        epochs=1,
        base_epochs=1,
        ft_epochs=1,
        qat_epochs=1,
        limit_train=300,
        limit_test=120,
        batch=64,
        seed=3,
        delta_budget="0.1",
    )
    return Run.open(str(tmp_path_factory.mktemp("recipe")), cfg, progress=False)


def test_base_starts_from_the_flat_trunk(recipe_run, monkeypatch, tmp_path):
    # a run of its own: the superclass stage must train here, whatever the other tests ran before
    recipe_run = Run.open(str(tmp_path / "run"), recipe_run.cfg, progress=False)
    flat = recipe_run.flat()
    base = recipe_run.base_from_flat()
    fs, bs = flat.state_dict(), base.state_dict()
    for k, v in fs.items():
        if not k.startswith("fc."):
            assert torch.equal(v, bs[k]), k
    H, N = recipe_run.hier.head_width, recipe_run.hier.n_super
    assert bs["fc.weight"].shape[0] == H
    for k in range(N):
        rows = np.nonzero(recipe_run.sup_of == k)[0]
        torch.testing.assert_close(bs["fc.weight"][k], fs["fc.weight"][rows].mean(0))
        torch.testing.assert_close(bs["fc.bias"][k], fs["fc.bias"][rows].mean(0))
    if H > N:  # rows the subclass networks alone train: a fresh init, not zeros (their grid needs a range)
        assert bs["fc.weight"][N:].abs().max() > 0
    # the superclass stage trains from exactly that network for base_epochs
    calls = []
    real_fit = T.fit

    def spy(model, x, y, recipe, **kw):
        calls.append((copy.deepcopy(model.state_dict()), recipe.epochs, kw["hooks"].desc))
        return real_fit(model, x, y, recipe, **kw)

    monkeypatch.setattr(T, "fit", spy)
    recipe_run.superclass()
    sd, epochs, desc = [c for c in calls if c[2] == "superclass network"][0]
    assert epochs == recipe_run.cfg.base_epochs
    for k, v in sd.items():
        if k.startswith("fc."):  # rows beyond N are a fresh random init in each call
            v, want = v[:N], bs[k][:N]
        else:
            want = bs[k]
        assert torch.equal(v, want), k


def test_vanilla_and_qat_fine_tunes_share_one_recipe(recipe_run, monkeypatch):
    calls = {}
    real_fit = T.fit

    def spy(model, x, y, recipe, **kw):
        hooks = kw["hooks"]
        kind = (
            "qat"
            if hooks.desc.startswith("QAT subclass")
            else ("vanilla" if hooks.desc.startswith("vanilla") else None)
        )
        if kind:
            calls[kind] = dict(x=x.clone(), y=y.clone(), recipe=recipe, **{k: v for k, v in kw.items() if k != "hooks"})
            calls[kind + "_step"] = hooks.after_step
        return real_fit(model, x, y, recipe, **kw)

    monkeypatch.setattr(T, "fit", spy)
    recipe_run.vanilla(0)
    recipe_run.sub_qat(0)
    v, q = calls["vanilla"], calls["qat"]
    assert torch.equal(v.pop("x"), q.pop("x")) and torch.equal(v.pop("y"), q.pop("y"))
    assert v == q  # the recipe (optimizer, epochs, lr, weight decay, batch, augmentation), seed, head mask
    assert v["recipe"].weight_decay == recipe_run.cfg.ft_weight_decay and v["recipe"].epochs == recipe_run.cfg.ft_epochs
    assert set(v) == {"recipe", "n_valid", "seed"}
    assert calls["vanilla_step"] is None and isinstance(calls["qat_step"], ProximalStep)
    assert calls["qat_step"].tau == 0.1


def test_bounds_definitions_by_hand():
    sup_of = np.array([0, 0, 1, 1, 1])
    logits = torch.tensor(
        [
            [2.0, 1.0, 0.0, 0.0, 3.0],  # argmax class 4 (super 1); true class 0
            [0.0, 0.0, 1.0, 0.9, 0.9],
        ]
    )  # super 1 holds the most probability
    true_k = np.array([0, 1])
    assert B.restricted_to_true_superclass(logits, sup_of, true_k).tolist() == [0, 2]
    p = torch.softmax(logits, 1).numpy()
    want = [int(p[i, 2:].sum() > p[i, :2].sum()) for i in range(2)]
    assert B.flat_routing(logits, sup_of, 2).tolist() == want
    from edgetool.toolchain.evaluate.metrics import gap_closed

    assert gap_closed(0.8, 0.7, 0.9)["value"] == pytest.approx(0.5)
    tie = gap_closed(0.8, 0.7, 0.7)
    assert tie["value"] is None and "does not exceed" in tie["reason"]
    manifest = {"base": {"size": 1000}, "deltas": [{"stored_size": 250}, {"stored_size": 100}]}
    assert B.storage_x(manifest) == [0.25, 0.1]
