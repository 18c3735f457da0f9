"""What `edgetool demo` trains on: half the shipped sample's training images unless told otherwise, and the
same recipe for every network, so the flat controls still get exactly Super-Sub's image passes."""

import pytest

pytest.importorskip("torch")

from click.testing import CliRunner  # noqa: E402

from edgetool.toolchain import demo as D  # noqa: E402
from edgetool.toolchain.train.run import TrainConfig  # noqa: E402


@pytest.fixture
def demo_cfg(monkeypatch, tmp_path):
    """``demo_cfg(*args)``: the TrainConfig `edgetool demo ARGS` would train with (run_demo not run)."""
    from edgetool.toolchain import cli

    seen = []
    monkeypatch.setattr(D, "run_demo", lambda out, cfg, codec: seen.append(cfg))

    def run(*args):
        result = CliRunner().invoke(cli.demo, ["--out", str(tmp_path / "out")] + [str(a) for a in args])
        assert result.exit_code == 0, result.output
        return seen.pop()

    return run


def test_the_demo_trains_on_half_the_sample_unless_told(demo_cfg, tmp_path):
    cfg = demo_cfg()
    assert cfg.data == "sample" and cfg.limit_train == D.SAMPLE_TRAIN_IMAGES == 3000
    assert (cfg.epochs, cfg.ft_epochs, cfg.qat_epochs) == (8, 10, 2)  # the defaults of train: one recipe
    assert demo_cfg("--limit-train", "0").limit_train == 0  # all 6,000
    assert demo_cfg("--limit-train", "1000").limit_train == 1000
    (tmp_path / "c.json").write_text('{"epochs": 4}')
    assert demo_cfg("--config", tmp_path / "c.json").limit_train == 0  # a config file says it all
    assert D.demo_config(TrainConfig(data="some/folder")).limit_train == 0  # other data: every image


def test_the_demo_table_reproduces_the_demos_settings():
    import ast
    import os

    from conftest import ROOT

    tree = ast.parse(open(os.path.join(ROOT, "benchmarks", "demo_table.py")).read())
    calls = [ast.unparse(n) for n in ast.walk(tree) if isinstance(n, ast.Call) and ast.unparse(n.func) == "run_demo"]
    assert calls == ["run_demo(args.out, demo_config(TrainConfig()))"]
