"""One preprocessing for every network input: the same image file through `classify` and through
`camera` (image-folder input) reaches the backend as bit-identical arrays; ``input.resize``
``shorter`` is torchvision's Resize + CenterCrop; a spec without the new fields preprocesses as
before they existed."""

import glob
import json
import os
import shutil

import numpy as np
import pytest

import conftest

from edgetool.cli import main
from edgetool.runtime.errors import UsageError
from edgetool.runtime.preprocess import load_image, load_images, prepare, to_input_array

CALTECH = os.path.join(conftest.SHARED, "datasets", "caltech101", "101_ObjectCategories")
RGB224 = {"shape": [3, 224, 224], "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}


def _noise(shape, seed):
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


@pytest.fixture(scope="module")
def image_files(tmp_path_factory):
    """Files whose decoding differs between readers: Caltech-101 JPEGs (colour and grey) where present,
    and made ones: a CMYK JPEG, a progressive JPEG, an RGBA PNG, a 16-bit grey PNG, a uint8 .npy."""
    from PIL import Image

    d = tmp_path_factory.mktemp("files")
    for c in ("car_side", "Leopards", "watch", "ketch"):  # car_side is stored grey
        for f in sorted(glob.glob(os.path.join(CALTECH, c, "*.jpg")))[:2]:
            shutil.copy(f, str(d / "{}_{}".format(c, os.path.basename(f))))
    Image.fromarray(_noise((61, 97, 3), 0)).convert("CMYK").save(d / "m_cmyk.jpg", quality=90)
    Image.fromarray(_noise((80, 45, 3), 1)).save(d / "m_progressive.jpg", quality=85, progressive=True)
    Image.fromarray(_noise((33, 70, 4), 2), "RGBA").save(d / "m_rgba.png")
    Image.fromarray(_noise((50, 40), 3).astype(np.uint16) * 257).save(d / "m_grey16.png")
    np.save(d / "m_rgb.npy", _noise((30, 20, 3), 4))
    return str(d)


class Recorder:
    """Wraps the ONNX Runtime backend's infer: a copy of every batch it is handed."""

    def __init__(self, monkeypatch):
        from edgetool.runtime.backends.ort import OrtBackend

        self.batches = []
        real = OrtBackend.infer

        def infer(be, batch, *a, **kw):
            self.batches.append(np.array(batch, copy=True))
            return real(be, batch, *a, **kw)

        monkeypatch.setattr(OrtBackend, "infer", infer)

    def take(self):
        out, self.batches = self.batches, []
        return out


def _run(args, capsys):
    with pytest.raises(SystemExit) as code:
        main([str(a) for a in args])
    out = capsys.readouterr()
    assert code.value.code == 0, out.err
    return out.out


def test_classify_and_camera_feed_the_backend_the_same_arrays(tiny_bundle, image_files, monkeypatch, capsys):
    """Per-image routing, one image per camera batch: both paths hand the backend each image's array
    twice (superclass network, then its subclass network), in the same order; the arrays must be equal
    bit for bit, not merely close."""
    pytest.importorskip("onnxruntime")
    pytest.importorskip("cv2")
    rec = Recorder(monkeypatch)
    out = _run(["classify", tiny_bundle, image_files, "--json", "--policy", "per-image", "--batch", "1"], capsys)
    classified = rec.take()
    rows = [json.loads(line) for line in out.splitlines()]
    out = _run(["camera", tiny_bundle, image_files, "--headless", "--json", "--policy", "per-image",
                "--scene-cut", "0"], capsys)  # fmt: skip
    streamed = rec.take()
    frames = [json.loads(line) for line in out.splitlines() if '"frame"' in line]
    assert [r["image"] for r in frames] == [r["image"] for r in rows] and len(rows) == len(os.listdir(image_files))
    assert len(classified) == len(streamed) == 2 * len(rows)
    for i, (a, b) in enumerate(zip(classified, streamed)):
        assert a.dtype == b.dtype == np.float32 and np.array_equal(a, b), (rows[i // 2]["image"], np.abs(a - b).max())
    assert [(r["superclass"], r["class"]) for r in frames] == [(r["superclass"], r["class"]) for r in rows]


def test_an_rgb_shorter_side_spec_gives_camera_frames_classify_inputs(image_files):
    """The same for a 3-channel input that resizes the shorter side and crops (what a pretrained backbone
    asks for): the camera's folder source and frame preprocessing against classify's load_images."""
    pytest.importorskip("cv2")
    from edgetool.runtime.camera.loop import CameraLoop
    from edgetool.runtime.camera.sources import OK, FolderSource, Options
    from edgetool.runtime.preprocess import folder_images

    spec = dict(RGB224, resize="shorter", crop=0.875)
    files = folder_images(image_files)
    source = FolderSource(image_files, Options())
    source.open()
    loop = CameraLoop(source, None, spec)
    for path in files:
        status, frame = source.read()
        assert status == OK and source.current == path
        x, _ = loop._preprocess([(frame, 0.0, 0.0, path)])
        assert np.array_equal(x, load_images([path], spec)), path


def test_grey_frames_and_opencv_bgr_frames_take_the_same_path():
    """A BGR frame from OpenCV, swapped to RGB, is the RGB image to the bit; grey frames pass as they are."""
    from edgetool.runtime.camera.frames import swap_rb

    spec = {"shape": [1, 28, 28], "mean": [0.5], "std": [0.25]}
    rgb = _noise((120, 90, 3), 5)
    bgr = np.ascontiguousarray(rgb[..., ::-1])
    assert np.array_equal(swap_rb(bgr), rgb) and np.array_equal(swap_rb(swap_rb(bgr)), bgr)
    rgba = _noise((10, 12, 4), 6)
    assert np.array_equal(swap_rb(swap_rb(rgba)), rgba) and np.array_equal(swap_rb(rgba)[..., 3], rgba[..., 3])
    grey = _noise((40, 30), 7)
    assert swap_rb(grey) is grey
    assert np.array_equal(prepare([swap_rb(bgr)], spec), prepare([rgb], spec))


@pytest.mark.parametrize("size", [(300, 200), (200, 300), (256, 256), (448, 224), (150, 100)])
def test_shorter_is_torchvision_resize_then_center_crop(size):
    """``resize: shorter`` with crop 0.875 at 224 is torchvision's Resize(256) + CenterCrop(224) on a PIL
    image, bit for bit, for landscape, portrait, square and small (upscaled) images whose longer side
    scales to a whole number of pixels (otherwise ours rounds it where torchvision truncates, and our
    crop offset rounds down where torchvision's rounds: at most one pixel apart)."""
    T = pytest.importorskip("torchvision.transforms")
    from PIL import Image

    w, h = size
    img = _noise((h, w, 3), w * h)
    want = np.asarray(T.Compose([T.Resize(256), T.CenterCrop(224)])(Image.fromarray(img)))
    got = to_input_array(img, dict(RGB224, resize="shorter", crop=0.875))
    assert got.shape == (224, 224, 3) and np.array_equal(got, want)
    one = to_input_array(img, dict(RGB224, resize="shorter"))  # crop 1: the shorter side to 224, then its centre
    assert np.array_equal(one, np.asarray(T.Compose([T.Resize(224), T.CenterCrop(224)])(Image.fromarray(img))))


def _before(image, spec):
    """to_input_array as it was before ``input.resize`` existed (the reference a spec without it keeps)."""
    from PIL import Image

    c, h, w = spec["shape"]
    image = image[..., None] if image.ndim == 2 else image
    image = image[..., :3] if image.shape[2] == 4 else image
    if c == 1 and image.shape[2] == 3:
        image = (image.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32))[..., None]
        image = np.clip(np.rint(image), 0, 255).astype(np.uint8)
    elif c == 3 and image.shape[2] == 1:
        image = np.repeat(image, 3, axis=2)
    if image.shape[:2] != (h, w):
        mode = "L" if image.shape[2] == 1 else "RGB"
        im = Image.fromarray(image[..., 0] if mode == "L" else image, mode)
        image = np.asarray(im.resize((w, h), Image.BILINEAR), dtype=np.uint8)
        image = image[..., None] if image.ndim == 2 else image
    return image


def test_a_spec_without_resize_preprocesses_as_before(image_files):
    for spec in ({"shape": [1, 28, 28]}, {"shape": [3, 32, 32]}, {"shape": [3, 24, 40], "resize": "squash"}):
        for path in sorted(os.listdir(image_files)):
            img = load_image(os.path.join(image_files, path))
            assert np.array_equal(to_input_array(img, spec), _before(img, spec)), (spec, path)


def test_bad_resize_settings_are_one_error():
    img = _noise((20, 30, 3), 8)
    with pytest.raises(UsageError, match="input.resize 'stretch'"):
        to_input_array(img, dict(RGB224, resize="stretch"))
    for crop in (0.0, 1.5):
        with pytest.raises(UsageError, match="input.crop"):
            to_input_array(img, dict(RGB224, resize="shorter", crop=crop))


def test_training_normalises_with_the_device_function():
    """The toolchain's tensors and bundle samples come from runtime.preprocess.normalize, bit for bit."""
    pytest.importorskip("torch")
    from edgetool.runtime.preprocess import normalize
    from edgetool.toolchain.data.folders import load_sample
    from edgetool.toolchain.train import fit

    ds = load_sample("test")
    mean, std = ds.stats()
    spec = {"mean": mean, "std": std}
    assert np.array_equal(fit.to_tensor(ds, mean, std).numpy(), normalize(ds.images, spec))
    assert np.array_equal(fit.preprocess_numpy(ds.images[:8], mean, std), normalize(ds.images[:8], spec))
