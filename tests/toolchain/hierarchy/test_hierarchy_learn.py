"""edgetool hierarchy learn: block-structured confusion matrices give back their blocks; overlap; bad input."""

import json

import numpy as np
import pytest

pytest.importorskip("scipy")

from edgetool.runtime.errors import UsageError  # noqa: E402
from edgetool.toolchain.hierarchy import spec as H  # noqa: E402
from edgetool.toolchain.hierarchy import learn as HL  # noqa: E402


def block_confusion(blocks, n_classes, seed=0, within=30.0, noise=1.0, diag=200.0):
    """Counts: a strong diagonal, heavy confusion inside each block, light noise elsewhere."""
    rng = np.random.default_rng(seed)
    c = rng.uniform(0, noise, (n_classes, n_classes))
    for b in blocks:
        for i in b:
            for j in b:
                c[i, j] += within * rng.uniform(0.6, 1.4)
    np.fill_diagonal(c, diag)
    return c


def as_sets(hier, classes):
    return {frozenset(classes.index(c) for c in s if c not in o) for s, o in zip(hier.subclasses, hier.overlap)}


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_recovers_shuffled_blocks(seed):
    rng = np.random.default_rng(seed)
    perm = rng.permutation(12)
    blocks = [perm[:3], perm[3:7], perm[7:9], perm[9:]]
    classes = ["k{}".format(i) for i in range(12)]
    hier, z = HL.learn(block_confusion(blocks, 12, seed), classes, theta=4)
    assert as_sets(hier, classes) == {frozenset(int(i) for i in b) for b in blocks}
    assert not hier.overlapping and z.shape == (11, 4)
    # every class is primary in exactly one superclass: the run's maps hold
    sup, loc = hier.mapping(classes)
    assert sorted(zip(sup.tolist(), loc.tolist())) == sorted(set(zip(sup.tolist(), loc.tolist())))


def test_theta_caps_cluster_size_and_one_gives_singletons():
    blocks = [list(range(0, 6)), list(range(6, 9))]
    classes = [str(i) for i in range(9)]
    c = block_confusion(blocks, 9)
    hier, _ = HL.learn(c, classes, theta=6)
    assert as_sets(hier, classes) == {frozenset(range(6)), frozenset(range(6, 9))}
    hier, _ = HL.learn(c, classes, theta=3)
    assert max(len(s) for s in hier.subclasses) <= 3
    assert all(s <= frozenset(range(6)) or s <= frozenset(range(6, 9)) for s in as_sets(hier, classes))
    hier, _ = HL.learn(c, classes, theta=1)
    assert hier.n_super == 9
    hier, _ = HL.learn(c, classes, theta=9)
    assert hier.n_super == 1


def test_overlap_adds_the_confused_class_to_the_other_cluster_only():
    blocks = [[0, 1, 2], [3, 4, 5], [6, 7, 8]]
    classes = list("abcdefghi")
    c = block_confusion(blocks, 9, noise=0.0)
    c[4, 1] = 40.0  # true e predicted as b: DCN[e, b] is large, so b joins e's cluster (equation 1)
    hier, _ = HL.learn(c, classes, theta=3, gamma=None)
    assert not hier.overlapping
    hier, _ = HL.learn(c, classes, theta=3, gamma=2.0)
    assert as_sets(hier, classes) == {frozenset(b) for b in blocks}  # primaries unchanged
    k_e = next(k for k, s in enumerate(hier.subclasses) if "e" in s and "e" not in hier.overlap[k])
    assert hier.overlap[k_e] == ["b"] and hier.subclasses[k_e][-1] == "b"
    assert sum(len(o) for o in hier.overlap) == 1
    # a larger gamma lowers the threshold 1/(gamma K): the weaker within-block links never cross
    hier, _ = HL.learn(c, classes, theta=3, gamma=1000.0)
    assert sum(len(o) for o in hier.overlap) == 1
    # the written file reads back with its overlap; the run maps use the primary superclass
    back = H.from_dict(json.loads(json.dumps(hier.to_dict())))
    assert back.overlap == hier.overlap
    sup, _ = back.mapping(classes)
    assert back.superclasses[sup[1]] != back.superclasses[k_e]
    li = back.local_index(classes)
    assert li[k_e, 1] == len(back.subclasses[k_e]) - 1 and (li >= 0).sum() == 10


def test_old_files_read_as_before_and_bad_overlap_is_refused():
    old = {"superclasses": [{"name": "x", "subclasses": ["a", "b"]}, {"name": "y", "subclasses": ["c"]}]}
    h = H.from_dict(old)
    assert h.overlap == [[], []] and h.to_dict() == old
    bad = [
        ({"name": "x", "subclasses": ["a", "b"]}, {"name": "y", "subclasses": ["c", "a"]}),  # two primaries
        ({"name": "x", "subclasses": ["a"], "overlap": ["b"]}, {"name": "y", "subclasses": ["b"]}),  # not a member
        ({"name": "x", "subclasses": ["a", "b"], "overlap": ["b"]}, {"name": "y", "subclasses": ["c"]}),  # no primary
        ({"name": "x", "subclasses": ["a", "a"]}, {"name": "y", "subclasses": ["c"]}),
    ]
    for sc in bad:
        with pytest.raises(UsageError):
            H.from_dict({"superclasses": list(sc)})


@pytest.mark.parametrize(
    "matrix, message",
    [
        ([[1, 2, 3], [4, 5, 6]], "square"),
        ([[1, -1], [0, 1]], "negative"),
        ([[1, float("nan")], [0, 1]], "NaN"),
        ([[0, 0], [0, 1]], "all zero"),
        ([[1]], "at least 2"),
        ([[1, 2], [3]], "not a numeric matrix"),
    ],
)
def test_bad_matrices(matrix, message):
    with pytest.raises(UsageError, match=message):
        HL.learn(matrix, ["a", "b", "c"][: len(matrix)], theta=2)


def test_bad_parameters():
    c = block_confusion([[0, 1]], 3)
    with pytest.raises(UsageError, match="theta"):
        HL.learn(c, ["a", "b", "c"], theta=0)
    for g in (0.0, -1.0, float("nan")):
        with pytest.raises(UsageError, match="gamma"):
            HL.learn(c, ["a", "b", "c"], theta=2, gamma=g)
    with pytest.raises(UsageError, match="class names"):
        HL.learn(c, ["a", "b"], theta=2)


def test_cli_learns_from_files_and_refuses_bad_input(run_cli, tmp_path):
    blocks = [[0, 1, 2], [3, 4], [5, 6, 7]]
    c = block_confusion(blocks, 8)
    names = ["n{}".format(i) for i in range(8)]
    np.save(tmp_path / "c.npy", c)
    (tmp_path / "c.csv").write_text(",".join(names) + "\n" + "\n".join(",".join(map(str, r)) for r in c))
    (tmp_path / "c.json").write_text(json.dumps({"classes": names, "confusion": c.tolist()}))
    for src in ("c.npy", "c.csv", "c.json"):
        out = tmp_path / (src + ".h.json")
        proc = run_cli("hierarchy", "learn", tmp_path / src, "-o", out, "--theta", "3")
        assert proc.returncode == 0, proc.stderr
        h = H.load(str(out))
        got = {frozenset(int(n.lstrip("n")) for n in s) for s in h.subclasses}
        assert got == {frozenset(b) for b in blocks}, src
        assert (tmp_path / (src + ".h.png")).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # bad input: one clear line, no traceback, nothing written
    (tmp_path / "ns.npy").write_bytes(b"")
    np.save(tmp_path / "rect.npy", np.ones((2, 3)))
    np.save(tmp_path / "neg.npy", -np.ones((3, 3)))
    (tmp_path / "nan.json").write_text("[[1, NaN], [0, 1]]")
    (tmp_path / "bad.txt").write_text("1,2\n3,4\n")
    cases = [
        (["rect.npy"], "square"),
        (["neg.npy"], "negative"),
        (["nan.json"], "NaN"),
        (["ns.npy"], "cannot read"),
        (["bad.txt"], "unknown confusion-matrix format"),
        (["missing.npy"], "no such"),
        (["c.npy", "--theta", "0"], "theta"),
        (["c.npy", "--gamma", "-2"], "gamma"),
        (["c.npy", "--classes", "c.csv"], "names for 8 classes"),
        ([".", "--split", "val"], "neither a confusion-matrix file nor a training run"),
    ]
    for args, message in cases:
        out = tmp_path / "never.json"
        proc = run_cli(
            "hierarchy",
            "learn",
            *[tmp_path / a if i == 0 or args[i - 1] == "--classes" else a for i, a in enumerate(args)],
            "-o",
            out,
        )
        assert proc.returncode != 0 and message in proc.stderr, (args, proc.stderr)
        assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
        assert not out.exists()


def test_a_nearly_diagonal_confusion_is_called_too_weak_to_cluster(run_cli, tmp_path):
    from edgetool.toolchain.hierarchy.learn import off_diagonal_share

    strong = block_confusion([[0, 1, 2], [3, 4], [5, 6, 7]], 8)
    weak = np.eye(8) * 1000 + np.random.default_rng(0).integers(0, 2, (8, 8))  # a flat network near 100%
    assert off_diagonal_share(weak) < 0.01 < 0.05 < off_diagonal_share(strong)
    assert off_diagonal_share(np.array([[3, 1], [0, 4]])) == pytest.approx(0.125)
    for name, c in (("strong", strong), ("weak", weak)):
        np.save(tmp_path / (name + ".npy"), c)
        proc = run_cli("hierarchy", "learn", tmp_path / (name + ".npy"), "-o", tmp_path / (name + ".json"))
        assert proc.returncode == 0, proc.stderr
        warned = [line for line in proc.stderr.splitlines() if line.startswith("WARNING:")]
        if name == "strong":
            assert warned == []
        else:
            assert warned == [
                "WARNING: weak.npy: only {:.2f}% of the confusion lies off the diagonal, too little to cluster on: "
                "the superclasses follow noise; learn from a split the network gets wrong more often, or give a "
                "hierarchy".format(100 * off_diagonal_share(weak))
            ]


def test_chained_singletons_are_packed_into_their_nearest_cluster():
    c = np.full((6, 6), 0.0)
    c[2:, 2:] = 30.0
    c[1, 2:] = c[2:, 1] = 10.0
    c[0, 1:] = c[1:, 0] = 3.0
    np.fill_diagonal(c, 100.0)
    classes = list("abcdef")
    hier, _ = HL.learn(c, classes, theta=4, min_size=1)  # the division alone peels off a and b
    assert as_sets(hier, classes) == {frozenset([0]), frozenset([1]), frozenset([2, 3, 4, 5])}
    hier, _ = HL.learn(c, classes, theta=4)  # default min size 2: a joins b, the only cluster it fits
    assert as_sets(hier, classes) == {frozenset([0, 1]), frozenset([2, 3, 4, 5])}
    with pytest.raises(UsageError, match="minimum cluster size"):
        HL.learn(c, classes, theta=4, min_size=0)
