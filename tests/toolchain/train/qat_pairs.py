"""Small QAT networks for the recipe and delta-budget tests."""

import copy

import torch

from edgetool.toolchain.train import models as M
from edgetool.toolchain.train import qat as Q
from edgetool.toolchain.train import fit as T


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
