"""ImageFolder trees through torchvision's ImageFolder: class order, limits, errors."""

import json

import numpy as np
import pytest

pytest.importorskip("torchvision")
from PIL import Image  # noqa: E402

from edgetool.runtime.errors import UsageError  # noqa: E402
from edgetool.toolchain.data.folders import load_image_folder  # noqa: E402


def make_tree(root, counts):
    for c, n in counts.items():
        (root / c).mkdir(parents=True)
        for i in range(n):
            color = (10 * i, 20 * len(c), 30)
            Image.new("RGB", (7 + i, 5), color).save(root / c / "img{}.png".format(i))
        (root / c / "notes.txt").write_text("not an image")


def test_classes_in_the_given_order_resized_and_limited(tmp_path):
    make_tree(tmp_path, {"cat": 3, "dog": 2, "fish": 1})
    ds = load_image_folder(str(tmp_path), 4, 3, classes=["dog", "cat"], name="pets")
    assert ds.classes == ["dog", "cat"] and ds.name == "pets"
    assert ds.images.shape == (5, 4, 4, 3) and ds.images.dtype == np.uint8
    assert ds.labels.tolist() == [0, 0, 1, 1, 1]
    assert tuple(ds.images[2, 0, 0]) == (0, 60, 30)  # cat/img0.png, a flat colour survives the resize
    gray = load_image_folder(str(tmp_path), 4, 1, limit_per_class=1)
    assert gray.classes == ["cat", "dog", "fish"] and gray.images.shape == (3, 4, 4, 1)
    assert gray.labels.tolist() == [0, 1, 2]


def test_errors_are_one_line(tmp_path):
    with pytest.raises(UsageError, match="no such image folder"):
        load_image_folder(str(tmp_path / "nope"), 4)
    make_tree(tmp_path, {"cat": 1})
    with pytest.raises(UsageError, match="class folders missing: dog"):
        load_image_folder(str(tmp_path), 4, classes=["cat", "dog"])
    (tmp_path / "empty" / "a").mkdir(parents=True)
    with pytest.raises(UsageError, match="no images found"):
        load_image_folder(str(tmp_path / "empty"), 4)


def test_squash_keeps_the_whole_photo_and_shorter_keeps_its_centre(tmp_path):
    """--resize: squash (the default) resizes the whole image to the square, as the device does with
    input.resize absent; shorter resizes the shorter side and keeps the centre square, as the device does
    with input.resize "shorter"."""
    from edgetool.runtime.preprocess import resize, shorter_side_crop

    img = np.zeros((6, 18, 3), np.uint8)  # a wide photo: red, green and blue thirds
    img[:, :6, 0], img[:, 6:12, 1], img[:, 12:, 2] = 255, 255, 255
    (tmp_path / "a").mkdir()
    Image.fromarray(img).save(tmp_path / "a" / "x.png")
    squash = load_image_folder(str(tmp_path), 6, 3).images[0]
    crop = load_image_folder(str(tmp_path), 6, 3, resize="shorter").images[0]
    assert np.array_equal(squash, resize(img, 6, 6)) and np.array_equal(crop, shorter_side_crop(img, 6, 6))
    assert squash[3, 0].tolist() == [255, 0, 0] and squash[3, 5].tolist() == [0, 0, 255]  # both edges kept
    assert (crop == [0, 255, 0]).all()  # the centre third alone


def test_train_with_resize_shorter_ships_it_in_the_bundle(run_cli, tmp_path):
    pytest.importorskip("torch")
    from conftest import one_error_line
    from newcomer import TINY, make_gray_folder

    data = make_gray_folder(str(tmp_path / "data"), per_class=(4, 2))
    proc = run_cli("train", tmp_path / "run", "--data", data, *TINY, "--resize", "shorter")
    assert proc.returncode == 0, proc.stderr
    with open(tmp_path / "run" / "data.json") as f:
        assert json.load(f)["resize"] == "shorter"
    proc = run_cli("export", tmp_path / "run", "--out", tmp_path / "bundle")
    assert proc.returncode == 0, proc.stderr
    with open(tmp_path / "bundle" / "manifest.json") as f:
        assert json.load(f)["input"]["resize"] == "shorter"
    shown = run_cli("inspect", tmp_path / "bundle").stdout
    assert "resize shorter: shorter side to 12, centre 12x12" in shown
    with open(tmp_path / "config.json", "w") as f:
        json.dump({"resize": "stretch"}, f)
    for args, message in (
        (["--arch", "efficientnet-lite0", "--pretrained", "imagenet", "--resize", "shorter"], "leave --resize out"),
        (["--config", tmp_path / "config.json"], "resize = 'stretch' is not one of squash, shorter"),
    ):
        assert message in one_error_line(run_cli("train", tmp_path / "other", "--data", data, *args))
