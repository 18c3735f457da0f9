"""Outlier exposure in the subclass fine-tunes (--ft-outliers): the loss, the fine-tune's images,
and a network that learns to be unsure on images that are not its own."""

import pytest

torch = pytest.importorskip("torch")

import torch.nn.functional as F  # noqa: E402

from edgetool.runtime.errors import UsageError  # noqa: E402
from edgetool.toolchain.train import fit as T  # noqa: E402
from edgetool.toolchain.train.run import Run, TrainConfig  # noqa: E402


def test_loss_is_cross_entropy_plus_weighted_cross_entropy_to_uniform():
    g = torch.Generator().manual_seed(0)
    out = torch.randn(6, 3, generator=g)
    y = torch.tensor([0, 2, T.OUTLIER, 1, T.OUTLIER, T.OUTLIER])
    inside = y >= 0
    want = F.cross_entropy(out[inside], y[inside]) - T.OUTLIER_WEIGHT * F.log_softmax(out[~inside], 1).mean()
    torch.testing.assert_close(T.fit_loss(out, y), want)
    torch.testing.assert_close(T.fit_loss(out[inside], y[inside]), F.cross_entropy(out[inside], y[inside]))
    # outliers only: the minimum is the uniform output, log(n) x the weight
    flat = torch.zeros(2, 3)
    y_out = torch.full((2,), T.OUTLIER)
    torch.testing.assert_close(T.fit_loss(flat, y_out), T.OUTLIER_WEIGHT * torch.log(torch.tensor(3.0)))
    assert T.fit_loss(flat + torch.tensor([2.0, 0, 0]), y_out) > T.fit_loss(flat, y_out)


def _blobs(n, centre, seed):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 2, generator=g) * 0.3 + torch.tensor(centre)


def test_outlier_exposure_makes_a_network_unsure_off_its_classes():
    """Two own classes left and right; images of another cluster far above. Without outlier
    exposure the network is as sure there as on its own classes; with it, close to 1/2."""
    x_own = torch.cat([_blobs(200, [-2.0, 0.0], 1), _blobs(200, [2.0, 0.0], 2)])
    y_own = torch.cat([torch.zeros(200, dtype=torch.long), torch.ones(200, dtype=torch.long)])
    x_other = torch.cat([_blobs(200, [-2.0, 4.0], 3), _blobs(200, [2.0, 4.0], 4)])
    x_probe = torch.cat([_blobs(100, [-2.0, 4.0], 6), _blobs(100, [2.0, 4.0], 7)])  # unseen images of it
    recipe = T.Recipe(epochs=30, lr=0.05, batch=64, weight_decay=0.0)
    conf = {}
    for name, (x, y) in {
        "plain": (x_own, y_own),
        "outliers": (torch.cat([x_own, x_other]), torch.cat([y_own, torch.full((400,), T.OUTLIER)])),
    }.items():
        torch.manual_seed(0)
        net = torch.nn.Sequential(torch.nn.Linear(2, 32), torch.nn.ReLU(), torch.nn.Linear(32, 2))
        hist = T.fit(net, x, y, recipe, seed=0)
        with torch.no_grad():
            assert (net(x_own).argmax(1) == y_own).float().mean() > 0.98, name  # own classes: still right
            conf[name] = float(torch.softmax(net(x_probe), 1).max(1).values.mean())
        assert 0.98 < hist["accuracy"][-1] <= 1.0  # counted on the labelled images only
    assert conf["outliers"] < 0.65 < conf["plain"], conf


@pytest.fixture(scope="module")
def oe_run(tmp_path_factory):
    cfg = TrainConfig(limit_train=300, limit_test=60, epochs=1, base_epochs=1, ft_epochs=1, batch=64, ft_outliers=0.5)
    return Run.open(str(tmp_path_factory.mktemp("oe")), cfg, progress=False)


def test_fine_tune_data_adds_a_fixed_draw_of_other_superclasses(oe_run):
    run = oe_run
    for k in range(run.hier.n_super):
        x, y = run.fine_tune_data(k)
        mask = run.sub_mask(k)
        n_own = int(mask.sum())
        assert int((y >= 0).sum()) == n_own and int((y == T.OUTLIER).sum()) == round(0.5 * n_own)
        assert torch.equal(x[:n_own], run.xtr[mask])
        # every outlier image is a training image of another superclass
        others = run.xtr[~mask].flatten(1)
        for img in x[n_own:].flatten(1):
            assert bool((others == img).all(1).any())
        x2, y2 = run.fine_tune_data(k)
        assert torch.equal(x, x2) and torch.equal(y, y2)
    run.cfg.ft_outliers = 0.0
    try:
        assert int((run.fine_tune_data(0)[1] == T.OUTLIER).sum()) == 0
    finally:
        run.cfg.ft_outliers = 0.5


@pytest.mark.parametrize("value", [-0.5, 11.0])
def test_ft_outliers_out_of_range_is_refused(value):
    with pytest.raises(UsageError, match="ft_outliers"):
        TrainConfig(ft_outliers=value).check()
