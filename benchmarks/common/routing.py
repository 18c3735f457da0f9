"""What the routing benchmarks (routing_diagnosis, routing_arbiter, routing_bundle,
routing_combiner, routing_recovery_gap) share: their options and result folders, the images a
run never used, "not mine" subclass networks, and the per-seed table of a chosen router."""

from __future__ import annotations

import json
import os

import numpy as np

HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


OUT = os.path.join(HERE, "results", "hierarchy")


MAX_EXTRA = 0.2


def result_folder(dataset: str) -> str:
    """Where a routing benchmark writes *dataset*'s results: seeds/ for ``<dataset>-seedN``."""
    return os.path.join(OUT, "seeds") if "-seed" in dataset else OUT


def add_run_args(ap, val_images: int = 30000) -> None:
    """The options every routing benchmark over hierarchy_learning.py's runs takes."""
    ap.add_argument("--dataset", required=True)
    ap.add_argument("--work", default=os.path.join("edgetool-out", "bench-hierarchy"))
    ap.add_argument("--val-images", type=int, default=val_images)


def run_path(work, dataset, hierarchy):
    return os.path.join(work, dataset, "flat" if hierarchy == "given" else hierarchy)


def softmax(z, t=1.0):
    z = z / t
    e = np.exp(z - z.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


def unused_training_images(run, n, seed=1234):
    """(x, y) of *n* training images, stratified, that the run never used: ``limit_train`` kept a
    stratified share of the training set, and the rest were neither trained on nor validated on.
    A validation split this size holds hundreds of stage-1 errors to choose a routing rule on."""
    import copy

    from edgetool.toolchain.data import folders as datasets
    from edgetool.toolchain.train import fit as training
    from edgetool.toolchain.train.run_data import load_data

    cfg = copy.deepcopy(run.cfg)
    cfg.limit_train = 0
    full, _, _ = load_data(cfg)
    _, used = datasets.stratified_split(full.labels, min(1.0, run.cfg.limit_train / len(full)), run.cfg.seed)
    assert len(used) == len(run.train) + len(run.data.val), "not the run's training images"
    rest = np.setdiff1d(np.arange(len(full)), used)
    if not len(rest):
        raise SystemExit("--val-images: the run trained on every training image; none is left")
    _, pick = datasets.stratified_split(full.labels[rest], min(1.0, n / len(rest)), seed)
    ds = full.subset(rest[pick])
    return training.to_tensor(ds, run.mean, run.std), np.asarray(ds.labels)


def confusable_draw(p_super, pool, k, n, seed):
    """round(*n*) of the images *pool* (at most all), drawn without replacement in proportion to
    the superclass network's probability *p_super* of cluster *k*: the images it confuses with it."""
    import torch

    n = min(len(pool), int(round(n)))
    g = torch.Generator().manual_seed(seed)
    return pool[torch.multinomial(p_super[pool, k] + 1e-3, n, replacement=False, generator=g)]


def not_mine_networks(run, ratio, draw="uniform"):
    """Subclass networks with one more head row, "not mine", trained on other superclasses'
    images (the run's fine-tune recipe); cached in ``<run>-notmine<R>``.  *draw*: ``uniform``
    (the run's outlier draw) or ``confusable`` (other superclasses' images drawn in proportion
    to the superclass network's probability of the cluster, as routing_diagnosis.py does)."""
    import torch

    from edgetool.toolchain.train import fit as training
    from edgetool.toolchain.train import models
    from edgetool.toolchain.train.checkpoints import float_from_state, float_state, load_checkpoint, save_checkpoint

    folder = run.path.rstrip("/") + "-notmine{}{:g}".format("" if draw == "uniform" else "-" + draw, ratio)
    p_super = None
    if draw == "confusable":
        p_super = torch.softmax(training.predict_logits(run.superclass(), run.xtr, run.hier.n_super).double(), 1)
    nets = []
    for k in range(run.hier.n_super):
        path = os.path.join(folder, "{}.pt".format(k))
        if not os.path.isfile(path):
            n = len(run.hier.subclasses[k])
            sd = run.superclass().state_dict()
            m = run.new_model(run.hier.head_width + 1)
            with torch.no_grad():
                models.load_trunk(m, sd)
                m.fc.weight[: sd["fc.weight"].shape[0]] = sd["fc.weight"]
                m.fc.bias[: sd["fc.bias"].shape[0]] = sd["fc.bias"]
                m.fc.weight[n], m.fc.bias[n] = 0.0, 0.0
            mask = run.sub_mask(k)
            y = torch.from_numpy(run.data.local[k])[run.ytr[mask]]
            pool = torch.nonzero(~mask).flatten()
            if p_super is not None:
                pool = confusable_draw(p_super, pool, k, ratio * int(mask.sum()), run.cfg.seed * 1009 + k)
            x, y = training.with_outliers(run.xtr[mask], y, run.xtr, pool, ratio, run.cfg.seed * 1009 + k)
            y = training.not_mine_labels(y, n)
            recipe = run.recipe(run.cfg.ft_epochs, run.cfg.ft_lr, weight_decay=run.cfg.ft_weight_decay)
            hooks = training.FitHooks("not-mine subclass [{}]".format(run.hier.superclasses[k]), run.progress)
            training.fit(m, x, y, recipe, n_valid=n + 1, seed=run.cfg.seed + k + 1, hooks=hooks)
            save_checkpoint(float_state(m), path)
        nets.append(float_from_state(load_checkpoint(path)))
    return nets


def across_seeds(dataset, path_of, script, what, seeds=(1, 2)):
    """A markdown table of the router chosen on validation, seed 0 and ``<dataset>-seedN``, from
    *script*'s results (read from ``path_of(name)``); *what* names what was chosen."""
    rows, fracs, machines = [], [], set()
    for seed in (0,) + tuple(seeds):
        name = dataset if seed == 0 else "{}-seed{}".format(dataset, seed)
        with open(path_of(name)) as f:
            d = json.load(f)
        c = d["chosen_on_validation"]
        machines.add(d["machine"])
        t = c["test"]
        fracs.append(t["recovered_fraction"])
        rows.append(
            "| {seed} | {networks}, {router} | {recovered} of {stage1_errors} ({recovered_fraction:.1%}) | {lost} "
            "| {accuracy:.2%} | {top1_accuracy:.2%} | {extra_switches_per_image:.3f} |".format(
                seed=seed, networks=c["networks"], router=c["router"].replace("_", " "), **t
            )
        )
    mean = float(np.mean(fracs))
    se = float(np.std(fracs, ddof=1) / np.sqrt(len(fracs))) if len(fracs) > 1 else 0.0
    return "\n".join(
        [
            "## {}: the router chosen on validation, per seed".format(dataset),
            "",
            "Written by `benchmarks/{} --across-seeds` from its per-seed results; measured on "
            "{}. Each seed's {} are chosen on 30,000 training images that "
            "seed's runs never used; the test set is the full 10,000 images.".format(
                script, "; ".join(sorted(machines)), what
            ),
            "",
            "| seed | networks, router | stage-1 errors recovered | right answers lost | accuracy | its top-1 "
            "| extra switches / image |",
            "|---:|---|---:|---:|---:|---:|---:|",
        ]
        + rows
        + ["", "Recovered: {:.1%} ± {:.1%} (mean ± SE over {} seeds).".format(mean, se, len(fracs)), ""]
    )


def write_across_seeds(dataset, path_of, script, what, stem):
    """Write (and print) :func:`across_seeds`'s table to results/hierarchy/<stem>-seeds-<dataset>.md."""
    text = across_seeds(dataset, path_of, script, what)
    with open(os.path.join(OUT, "{}-seeds-{}.md".format(stem, dataset)), "w") as f:
        f.write(text)
    print(text)
