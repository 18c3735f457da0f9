"""ImageFolder trees through torchvision's ImageFolder: class order, limits, errors."""

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
