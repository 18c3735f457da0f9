"""The training recipe: proximal delta budget, BN/head patch, base from the flat trunk, one
fine-tune recipe for vanilla and QAT, and the bounds' definitions."""

import copy

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from edgetool.toolchain import bounds as B  # noqa: E402
from edgetool.toolchain import models as M  # noqa: E402
from edgetool.toolchain import qat as Q  # noqa: E402
from edgetool.toolchain import train as T  # noqa: E402
from edgetool.toolchain.pipeline import Run, TrainConfig  # noqa: E402


def _data(seed, n=64):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 1, 28, 28, generator=g)
    y = (x[:, 0, :14].mean((1, 2)) > 0).long() + (x[:, 0, 14:].mean((1, 2)) > 0).long()
    return x, y


def _qat_pair(seed=0):
    """A briefly trained base QAT network (so its activation scales are meaningful) and a copy."""
    torch.manual_seed(seed)
    m = M.build("resnet8", 1, 4)
    x, y = _data(seed)
    T.fit(m, x, y, T.Recipe(2, 3e-3, 32), n_valid=3, hooks=T.FitHooks(progress=False))
    base = Q.from_float(m, [x])
    return base, copy.deepcopy(base)


def test_parse_budget():
    assert Q.parse_budget("0") == ("dense", 0.0)
    assert Q.parse_budget("dense") == ("dense", 0.0)
    assert Q.parse_budget("0.05") == ("prox", 0.05)
    assert Q.parse_budget(0.2) == ("prox", 0.2)
    assert Q.parse_budget("patch") == ("patch", 0.0)
    assert Q.parse_budget("30%") == ("topk", 0.3)
    assert Q.parse_budget(" 100% ") == ("dense", 0.0)
    assert Q.parse_budget("grid8") == ("grid", 8.0)
    for bad in ("-1", "nan", "inf", "lots", "1e400", "0%", "150%", "x%", "%", "grid", "grid1", "grid0.5", "grid99"):
        with pytest.raises(ValueError, match="delta budget"):
            Q.parse_budget(bad)


def test_proximal_step_snaps_small_moves_back_exactly():
    base, net = _qat_pair()
    step = Q.ProximalStep(net, base, tau=0.5)
    lr = 0.01  # threshold 0.005
    w = net.weight("stem.weight")
    bw = base.weight("stem.weight").detach()
    move = torch.zeros_like(w)
    flat = move.view(-1)
    flat[0::3] = 0.004  # below the threshold: back to the base exactly
    flat[1::3] = -0.02  # above: shrunk by the threshold toward the base
    with torch.no_grad():
        w.add_(move)
    step(lr)
    d = (w - bw).detach().view(-1)
    assert torch.all(d[0::3] == 0)
    assert torch.all(d[2::3] == 0)
    torch.testing.assert_close(d[1::3], torch.full_like(d[1::3], -0.015), rtol=0, atol=1e-6)
    # untouched tensors are exactly the base; BatchNorm and biases are not thresholded
    for n, p in net.named_parameters():
        if n != "params.stem__weight":
            assert torch.equal(p, dict(base.named_parameters())[n]), n
    assert len(step.pairs) == len(net.layers)
    with torch.no_grad():
        net.bns["stem"].weight.add_(1e-4)
    before = net.bns["stem"].weight.detach().clone()
    step(lr)
    assert torch.equal(net.bns["stem"].weight.detach(), before)


def test_prox_deltas_are_exact_zeros_and_export_as_mod_256(tmp_path):
    """A fine-tune under the proximal step: most codes equal the base; the bundle's packed delta
    is (q_sub - q_base) mod 256 for every int8 weight, and base + delta gives q_sub bit for bit."""
    from edgetool.export.bundle import packed, refit_layout

    base, net = _qat_pair(1)
    x, y = _data(11)
    net.train()
    T.fit(
        net,
        x,
        y,
        T.Recipe(2, 3e-3, 32, weight_decay=5e-4),
        n_valid=3,
        hooks=T.FitHooks(progress=False, after_step=Q.ProximalStep(net, base, 0.9)),
    )
    d = Q.code_delta(base, net)
    assert np.count_nonzero(d) > 0  # something moved
    dense = copy.deepcopy(base)
    dense.train()
    T.fit(dense, x, y, T.Recipe(2, 3e-3, 32, weight_decay=5e-4), n_valid=3, hooks=T.FitHooks(progress=False))
    assert np.count_nonzero(d) < 0.5 * np.count_nonzero(Q.code_delta(base, dense))  # far sparser than dense
    layout = refit_layout(base)
    delta = layout.make_delta(packed(layout, base), packed(layout, net))
    bc, sc = base.int8_codes(), net.int8_codes()
    for t in layout.tensors:
        if t.dtype != "int8":
            continue
        got = delta[t.offset : t.offset + t.nbytes]
        want = ((sc[t.name].astype(np.int16) - bc[t.name].astype(np.int16)) % 256).astype(np.uint8).ravel()
        assert np.array_equal(got, want), t.name
        back = (bc[t.name].view(np.uint8).ravel() + got).view(np.int8)  # uint8 wrap-around
        assert np.array_equal(back, sc[t.name].ravel()), t.name


def test_topk_keeps_exactly_the_largest_share_in_code_steps():
    """After the ramp, only the top share of weights by |w - w_base| / s stays moved; every other
    weight equals the base exactly, in every int8 layer at once (one global ranking)."""
    base, net = _qat_pair()
    step = Q.DeltaTopK(net, base, density=0.25, total_steps=10, ramp=0.5)
    assert step.density_at(0) == 1.0 and step.density_at(5) == 0.25 and step.density_at(9) == 0.25
    assert 0.25 < step.density_at(2) < 1.0
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for n in net.layers:
            w = net.weight(n + ".weight")
            w.add_(torch.randn(w.shape, generator=g) * net.wscale(n).reshape([-1] + [1] * (w.dim() - 1)) * 3)

    def code_steps(n):
        w = net.weight(n + ".weight")
        return ((w - base.weight(n + ".weight")).abs() / net.wscale(n).reshape([-1] + [1] * (w.dim() - 1))).reshape(-1)

    scores = torch.cat([code_steps(n) for n in net.layers]).detach()
    step.t = 5
    step(0.01)
    moved = torch.cat([(net.weight(n + ".weight") != base.weight(n + ".weight")).reshape(-1) for n in net.layers])
    n = moved.numel()
    assert int(moved.sum()) == round(0.25 * n)
    assert float(scores[moved].min()) >= float(scores[~moved].max())  # the largest moves are the kept ones
    d = Q.code_delta(base, net)
    assert np.count_nonzero(d) <= round(0.25 * n)


def test_topk_fine_tune_meets_its_share_and_exports_exact_deltas(tmp_path):
    """A fine-tune under a 20% budget changes at most 20% of the int8 codes, and the bundle's
    packed delta reproduces the subclass codes from the base bit for bit."""
    from edgetool.export.bundle import packed, refit_layout

    base, net = _qat_pair(1)
    x, y = _data(11)
    net.train()
    steps = 2 * int(np.ceil(len(y) / 32))
    step = Q.budget_step(net, base, "20%", steps)
    assert isinstance(step, Q.DeltaTopK)
    T.fit(
        net,
        x,
        y,
        T.Recipe(2, 3e-3, 32, weight_decay=5e-4),
        n_valid=3,
        hooks=T.FitHooks(progress=False, after_step=step),
    )
    d = Q.code_delta(base, net)
    assert 0 < np.count_nonzero(d) <= 0.2 * d.size
    layout = refit_layout(base)
    delta = layout.make_delta(packed(layout, base), packed(layout, net))
    bc, sc = base.int8_codes(), net.int8_codes()
    for t in layout.tensors:
        if t.dtype == "int8":
            back = (bc[t.name].view(np.uint8).ravel() + delta[t.offset : t.offset + t.nbytes]).view(np.int8)
            assert np.array_equal(back, sc[t.name].ravel()), t.name


def test_delta_grid_fine_tune_moves_codes_by_multiples_and_survives_save_load(tmp_path):
    """Under grid4 every int8 code differs from the base code by a multiple of 4 (or sits at the
    clamp), the forward pass computes with exactly those codes, the packed delta reproduces them,
    and a saved network reloads with the same codes."""
    from edgetool.export.bundle import packed, refit_layout

    base, net = _qat_pair(2)
    net.set_delta_grid(base, 4)
    x, y = _data(12)
    net.train()
    T.fit(net, x, y, T.Recipe(2, 3e-3, 32, weight_decay=5e-4), n_valid=3, hooks=T.FitHooks(progress=False))
    bc, sc = base.int8_codes(), net.int8_codes()
    moved = 0
    for name in bc:
        d = sc[name].astype(np.int16) - bc[name].astype(np.int16)
        at_clamp = np.abs(sc[name]) == 127
        assert np.all((d % 4 == 0) | at_clamp), name
        moved += int(np.count_nonzero(d))
    assert moved > 0
    net.eval()
    for layer in net.layers:  # the forward pass uses the grid codes
        s = net.wscale(layer).reshape([-1] + [1] * (sc[layer + ".weight"].ndim - 1))
        torch.testing.assert_close(net._fq_w(layer), torch.from_numpy(sc[layer + ".weight"]).float() * s)
    layout = refit_layout(base)
    delta = layout.make_delta(packed(layout, base), packed(layout, net))
    for t in layout.tensors:
        if t.dtype == "int8":
            back = (bc[t.name].view(np.uint8).ravel() + delta[t.offset : t.offset + t.nbytes]).view(np.int8)
            assert np.array_equal(back, sc[t.name].ravel()), t.name
    torch.save(net.state(), tmp_path / "n.pt")
    again = Q.QATNet.from_state(torch.load(tmp_path / "n.pt", weights_only=False))
    assert again.delta_step == 4
    for name, codes in again.int8_codes().items():
        assert np.array_equal(codes, sc[name]), name


def test_patch_mode_changes_only_bn_and_head():
    base, net = _qat_pair(2)
    Q.freeze_for_patch(net)
    x, y = _data(12)
    net.train()
    T.fit(net, x, y, T.Recipe(1, 3e-3, 32), n_valid=3, hooks=T.FitHooks(progress=False))
    bc, sc = base.int8_codes(), net.int8_codes()
    for name in bc:
        if name == "fc.weight":
            assert not np.array_equal(bc[name], sc[name])
        else:
            assert np.array_equal(bc[name], sc[name]), name
    assert any(not np.array_equal(a, b) for a, b in zip(base.float_tensors().values(), net.float_tensors().values()))


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


def test_base_starts_from_the_flat_trunk(recipe_run, monkeypatch):
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
    assert calls["vanilla_step"] is None and isinstance(calls["qat_step"], Q.ProximalStep)
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
    from edgetool.toolchain.report import gap_closed

    assert gap_closed(0.8, 0.7, 0.9)["value"] == pytest.approx(0.5)
    tie = gap_closed(0.8, 0.7, 0.7)
    assert tie["value"] is None and "does not exceed" in tie["reason"]
    manifest = {"base": {"size": 1000}, "deltas": [{"stored_size": 250}, {"stored_size": 100}]}
    assert B.storage_x(manifest) == [0.25, 0.1]
