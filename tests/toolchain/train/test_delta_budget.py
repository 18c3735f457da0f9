"""The delta budget: the proximal step, the top share, the delta grid and the BN/head patch; each
gives exact zeros and exports (q_sub - q_base) mod 256."""

import copy

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from edgetool.toolchain.train import delta_budget as DB  # noqa: E402
from edgetool.toolchain.train import qat as Q  # noqa: E402
from edgetool.toolchain.train import fit as T  # noqa: E402
from qat_pairs import _data, _qat_pair  # noqa: E402


def test_parse_budget():
    assert DB.parse_budget("0") == ("dense", 0.0)
    assert DB.parse_budget("dense") == ("dense", 0.0)
    assert DB.parse_budget("0.05") == ("prox", 0.05)
    assert DB.parse_budget(0.2) == ("prox", 0.2)
    assert DB.parse_budget("patch") == ("patch", 0.0)
    assert DB.parse_budget("30%") == ("topk", 0.3)
    assert DB.parse_budget(" 100% ") == ("dense", 0.0)
    assert DB.parse_budget("grid8") == ("grid", 8.0)
    for bad in ("-1", "nan", "inf", "lots", "1e400", "0%", "150%", "x%", "%", "grid", "grid1", "grid0.5", "grid99"):
        with pytest.raises(ValueError, match="delta budget"):
            DB.parse_budget(bad)
    b = DB.parse_budget("30%")
    assert isinstance(b, DB.DeltaBudget) and (b.mode, b.value) == ("topk", 0.3)
    assert b.to_dict("30%") == {"mode": "topk", "value": 0.3, "text": "30%"}
    from edgetool.runtime.choices import BUDGET_MODES

    assert {DB.parse_budget(t).mode for t in ("0", "0.05", "patch", "30%", "grid8")} == set(BUDGET_MODES)


def test_the_bundle_records_the_budget_its_deltas_were_trained_under(tiny_run, tiny_bundle, run_cli):
    """The manifest holds the parsed budget of the run that trained the deltas; inspect shows it."""
    from edgetool.runtime.bundle.reader import Bundle

    with Bundle.open(tiny_bundle) as b:
        text = tiny_run.cfg.delta_budget
        assert b.model.delta_budget == (tiny_run.cfg.budget().mode, tiny_run.cfg.budget().value, text)
        assert b.model.raw["training"]["delta_budget"]["text"] == text
    out = run_cli("inspect", tiny_bundle)
    assert out.returncode == 0, out.stderr
    line = [ln for ln in out.stdout.splitlines() if ln.startswith("budget")]
    assert line == ["budget      {} (--delta-budget {})".format(tiny_run.cfg.budget().mode, text)], out.stdout


def test_proximal_step_snaps_small_moves_back_exactly():
    base, net = _qat_pair()
    step = DB.ProximalStep(net, base, tau=0.5)
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
        hooks=T.FitHooks(progress=False, after_step=DB.ProximalStep(net, base, 0.9)),
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
    step = DB.DeltaTopK(net, base, density=0.25, total_steps=10, ramp=0.5)
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
    step = DB.budget_step(net, base, "20%", steps)
    assert isinstance(step, DB.DeltaTopK)
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
    DB.freeze_for_patch(net)
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
