"""A training run's bundle: the Super-Sub networks with the routing chosen on the validation
split, or one of the flat controls as a single-network bundle."""

from __future__ import annotations

from typing import Any, Optional, Tuple

from edgetool.export.atomic import check_out
from edgetool.export.bundle import write_bundle
from edgetool.runtime.choices import FLAT_CONTROLS


def export_run(
    run,
    out_dir: str,
    codec: str = "zstd",
    force: bool = False,
    routing_data=None,
    model: str = "super-sub",
    release: Optional[int] = None,
    combiner_features: bool = True,
) -> dict:
    """The int8 bundle of *run*; routing chosen on the validation split, or on *routing_data*
    (x, labels); *combiner_features* False keeps the subclass networks' pooled features out of
    the learned pair combiners' inputs.  *model* "flat" or "flat-wide": that flat control, as a
    flat bundle."""
    from .routing.search import bundle_routing

    check_out(out_dir, force)  # before any network is loaded or trained
    if model != "super-sub":
        net = run.flat_control(FLAT_CONTROLS[model])
        subs = [net] * run.hier.n_super  # zero deltas: the format stays whole, nothing switches
        args: Tuple[Any, Any, str, Any, Optional[dict], bool]  # extra: None here, the routing dict below
        args = (run.hier, run.input_spec, codec, run.samples(), None, force)
        return write_bundle(out_dir, net, subs, *args, flat_classes=list(run.train.classes), release=release)
    base = run.super_qat()
    subs = [run.sub_qat(k) for k in range(run.hier.n_super)]
    extra = bundle_routing(
        run, base, subs, data=routing_data, features=combiner_features
    )  # chosen on the validation split, if any
    args = (run.hier, run.input_spec, codec, run.samples(), extra, force)
    text = str(run.cfg.delta_budget).strip() or "dense"
    training = {"delta_budget": run.cfg.budget().to_dict(text)}  # the budget these deltas were trained under
    return write_bundle(out_dir, base, subs, *args, release=release, training=training)
