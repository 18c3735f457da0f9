"""`edgetool data sample-images DIR`: the shipped sample's test images as PNGs to try classify on."""

import os

import numpy as np
import pytest


def test_sample_images_are_the_shipped_test_images_and_classify_reads_them(run_cli, tiny_bundle, tmp_path):
    Image = pytest.importorskip("PIL.Image")
    from edgetool.runtime.files import slug
    from edgetool.toolchain.data.folders import load_sample

    out = tmp_path / "try"
    proc = run_cli("data", "sample-images", out, "--per-class", "2")
    assert proc.returncode == 0, proc.stderr
    test = load_sample("test")
    assert proc.stdout.startswith("20 images of 10 classes in ")
    assert sorted(os.listdir(out)) == sorted(slug(c) for c in test.classes)
    for c, name in enumerate(test.classes):
        first = np.nonzero(test.labels == c)[0][:2]
        for n, i in enumerate(first):
            got = np.asarray(Image.open(out / slug(name) / "{:03d}.png".format(n)))
            assert np.array_equal(got, test.images[i, :, :, 0])
    proc = run_cli("classify", tiny_bundle, out, "--json")
    assert proc.returncode == 0 and len(proc.stdout.strip().splitlines()) == 20, proc.stderr


def test_sample_images_all_is_the_whole_test_split(run_cli, tmp_path):
    """--per-class all writes the 1,500 test images the demo measures, 150 of each class."""
    out = tmp_path / "test"
    proc = run_cli("data", "sample-images", out, "--per-class", "all")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("1500 images of 10 classes in ")
    assert sorted(len(os.listdir(out / d)) for d in os.listdir(out)) == [150] * 10


def test_sample_images_refuses_a_file_and_a_bad_count(run_cli, tmp_path):
    from conftest import one_error_line

    (tmp_path / "f").write_text("x")
    for args, message in (
        ([tmp_path / "f"], "exists and is not a folder"),
        ([tmp_path / "d", "--per-class", "0"], "got '0'"),
        ([tmp_path / "d", "--per-class", "151"], "got '151'"),
        ([tmp_path / "d", "--per-class", "some"], "--per-class must be 1 to 150 or 'all'"),
    ):
        assert message in one_error_line(run_cli("data", "sample-images", *args))
    assert not (tmp_path / "d").exists()
