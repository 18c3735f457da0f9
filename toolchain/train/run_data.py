"""What a run trains on: its configuration, its data and the tensors made from it, loaded once."""

from __future__ import annotations

import dataclasses
import os
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Optional

import torch

from edgetool.runtime import commands
from edgetool.runtime.choices import RESIZE_MODES
from edgetool.runtime.errors import UsageError
from edgetool.runtime.files import write_json_atomic

from ..data import folders as datasets
from ..hierarchy import spec as hierarchy
from . import fit as training
from ..config_check import check_types, read_json

if TYPE_CHECKING:
    from .delta_budget import DeltaBudget


@dataclass
class TrainConfig:
    data: str = (
        "sample"  # "sample", an IDX folder, an ImageFolder root with train/ and test/, or a CIFAR python archive
    )
    pretrained: Optional[str] = (
        None  # "imagenet", or a torchvision ResNet state_dict (.pth): every float network starts from it
    )
    hierarchy: Optional[str] = None  # JSON file; the sample ships its own
    arch: str = "resnet8"
    pretrained_partial: bool = False  # load a checkpoint that fills under 90% of the backbone anyway
    freeze: str = "auto"  # a pretrained EfficientNet-Lite: the part up to which the trunk is frozen ("none": none)
    tail_lr: float = 1e-3  # learning rate of a pretrained backbone's trainable tail
    specialists: int = 0  # a pretrained backbone: tail specialists of this many superclasses (0: none)
    width_mult: float = 1.0
    image_size: Optional[int] = None  # resize for ImageFolder data
    resize: str = "squash"  # how images reach the network's size: whole image to the square, or "shorter" + centre crop
    channels: int = 0  # ImageFolder data: 1 (grayscale) or 3 (RGB); 0 detects it from the images
    epochs: int = 8  # flat network (and the superclass network with base_init="scratch")
    lr: float = 3e-3
    base_init: str = "flat"  # superclass network starts from the flat network's trunk ("flat") or from scratch
    base_epochs: int = 3  # superclass epochs from the flat trunk
    ft_epochs: int = 10  # every subclass fine-tune: vanilla fp32 and QAT int8 share this recipe
    ft_lr: float = 3e-3
    ft_weight_decay: float = 5e-4
    ft_outliers: float = 0.0  # other superclasses' images per own image in subclass fine-tunes (outlier exposure)
    ft_not_mine: bool = False  # those images train one more head row, "not mine", instead of a uniform output
    qat_epochs: int = 2  # QAT of the superclass network
    qat_lr: float = 1e-3
    qat_weight_grad: str = "clip"  # "clip": no gradient beyond +-127 codes; "ste": straight through
    delta_budget: str = "0.05"  # proximal threshold tau toward the base (0 = dense), or "patch"
    batch: int = 128
    seed: int = 0
    augment: str = "auto"  # "none", "flip" (random horizontal flip), or "auto": flip only for photo-like data
    pad: int = 0  # random-crop padding (4 for CIFAR); 0 = no crop
    calib_batches: int = 8
    limit_train: int = 0  # keep at most this many training images (0 = all)
    limit_test: int = 0
    val_fraction: float = 0.0  # hold this stratified fraction of the training images out (edgetool hierarchy learn)
    update_of: Optional[str] = None  # a finished run: the int8 networks continue from its weights, scales frozen

    def save(self, path):
        write_json_atomic(path, asdict(self))

    @classmethod
    def load(cls, path):
        d = read_json(path)
        if "flip" in d and "augment" not in d:  # config.json of runs that predate --augment
            d["augment"] = "flip" if d["flip"] else "none"
        cfg = cls(**{k: v for k, v in d.items() if k in cls.__dataclass_fields__})
        cfg.check(path)
        return cfg

    def check(self, source: str = "config") -> None:
        check_types(self, source)
        if self.augment not in AUGMENTS:
            shown = ascii(self.augment)[:40]
            raise UsageError("{}: augment = {} is not one of {}".format(source, shown, ", ".join(AUGMENTS)))
        if self.resize not in RESIZE_MODES:
            raise UsageError(
                "{}: resize = {} is not one of {}".format(source, ascii(self.resize)[:40], ", ".join(RESIZE_MODES))
            )
        if self.channels not in (0, 1, 3):
            raise UsageError("{}: channels = {} is not 0 (detect), 1 or 3".format(source, self.channels))
        if self.pad < 0:
            raise UsageError("{}: pad = {} is negative".format(source, self.pad))
        if not 0 <= self.ft_outliers <= 10:
            raise UsageError("{}: ft_outliers = {} is not between 0 and 10".format(source, self.ft_outliers))
        if self.ft_not_mine and not self.ft_outliers:
            raise UsageError("{}: ft_not_mine needs ft_outliers > 0 (the images it learns from)".format(source))
        try:
            self.budget()
        except ValueError as exc:
            raise UsageError("{}: {}".format(source, exc)) from None

    def budget(self) -> "DeltaBudget":
        """The delta budget, parsed once from its text (:func:`.delta_budget.parse_budget`)."""
        from .delta_budget import parse_budget

        return parse_budget(self.delta_budget)


AUGMENTS = ("auto", "none", "flip")
# Data whose classes keep their meaning when mirrored: "auto" flips these, and nothing else.
_FLIP_SAFE = {
    "fashion-mnist-sample": "the shipped Fashion-MNIST sample (clothing keeps its class when mirrored)",
    "cifar": "CIFAR photos (torchvision's CIFAR recipe flips)",
}


def resolve_augment(cfg: "TrainConfig", train) -> dict:
    """The augmentation a run trains with: {"augment", "flip", "pad", "why"}."""
    if cfg.augment != "auto":
        flip, why = cfg.augment == "flip", "--augment {}".format(cfg.augment)
    else:
        key = "cifar" if "cifar" in (train.name or "").lower() else train.name
        flip = key in _FLIP_SAFE
        why = (
            "auto: flip for " + _FLIP_SAFE[key]
            if flip
            else "auto: no flip for this data (a mirror changes digits and text; --augment flip turns it on)"
        )
    return {"augment": "flip" if flip else "none", "flip": flip, "pad": int(cfg.pad), "why": why}


def load_data(cfg: TrainConfig):
    """(train, test, hierarchy) for the configured data source."""
    if cfg.data == "sample":
        hier = hierarchy.load(cfg.hierarchy or datasets.sample_hierarchy_path())
        train, test = datasets.load_sample("train"), datasets.load_sample("test")
        train.channels_from = "the shipped sample is grayscale"
    elif cfg.data.startswith(("cifar10:", "cifar100:")) or (
        os.path.exists(cfg.data) and _cifar_archive(cfg.data) is not None
    ):
        train, test, hier = _load_cifar(cfg)
    else:
        train, test, hier = _load_folder(cfg)
    if cfg.channels and cfg.channels != train.channels:
        raise UsageError(
            "--channels {}: {} holds {}-channel images; --channels applies to ImageFolder data".format(
                cfg.channels, cfg.data, train.channels
            )
        )
    if cfg.limit_train:
        _, keep = datasets.stratified_split(train.labels, min(1.0, cfg.limit_train / len(train)), cfg.seed)
        train = train.subset(keep)
    if cfg.limit_test:
        _, keep = datasets.stratified_split(test.labels, min(1.0, cfg.limit_test / len(test)), cfg.seed)
        test = test.subset(keep)
    return train, test, dataclasses.replace(hier, not_mine=bool(cfg.ft_not_mine))


def hold_out(train, cfg: TrainConfig):
    """(train, validation): ``val_fraction`` of the training images, stratified, never trained on."""
    if not cfg.val_fraction:
        return train, None
    if not 0 < cfg.val_fraction < 1:
        raise UsageError("--val-fraction must be between 0 and 1, got {}".format(cfg.val_fraction))
    keep, val = datasets.stratified_split(train.labels, cfg.val_fraction, cfg.seed + 1)
    return train.subset(keep), train.subset(val)


def _load_cifar(cfg: TrainConfig):
    from ..data import cifar

    path = cfg.data.split(":", 1)[1] if ":" in cfg.data.split(os.sep)[0] else cfg.data
    archive = _cifar_archive(path)
    if archive is None:
        raise UsageError(
            "{}: no CIFAR python archive here; run `{}`".format(path, commands.data_download("cifar10", path))
        )
    train, hier = cifar.load_archive(archive, "train")
    test, _ = cifar.load_archive(archive, "test")
    train.channels_from = "CIFAR archives hold RGB images"
    if cfg.hierarchy:
        hier = hierarchy.load(cfg.hierarchy)
    return train, test, hier


def _load_folder(cfg: TrainConfig):
    """IDX files or train/ and test/ image folders, with hierarchy.json beside them."""
    root = cfg.data
    if not os.path.isdir(root):
        raise UsageError("{}: no such data folder".format(root))
    if cfg.hierarchy == SINGLE:
        return _single(root, cfg)
    hpath = _hierarchy_path(cfg)
    hd = read_json(hpath, "hierarchy file")
    names = hd.get("label_index")
    classes = [names[str(i)] for i in range(len(names))] if names else hd.get("fine_label_names")
    if any(f.startswith("train-images-idx3-ubyte") for f in os.listdir(root)):
        if not classes:
            raise UsageError("{}: IDX data needs label_index in the hierarchy file".format(hpath))
        train, test = datasets.load_idx_dir(root, "train", classes), datasets.load_idx_dir(root, "test", classes)
        train.channels_from = "IDX files hold grayscale images"
    elif os.path.isdir(os.path.join(root, "train")) and os.path.isdir(os.path.join(root, "test")):
        size, how = cfg.image_size or 32, cfg.resize
        train = datasets.load_image_folder(os.path.join(root, "train"), size, cfg.channels, classes, resize=how)
        test = datasets.load_image_folder(os.path.join(root, "test"), size, train.channels, train.classes, resize=how)
    else:
        raise UsageError("{}: neither IDX files nor train/ and test/ image folders".format(root))
    return train, test, hierarchy.load(hpath)


def _hierarchy_path(cfg: TrainConfig) -> str:
    """The hierarchy file: --hierarchy when given (it must exist), else DATA/hierarchy.json."""
    if cfg.hierarchy:
        if not os.path.isfile(cfg.hierarchy):
            raise UsageError("{}: no such hierarchy file (--hierarchy)".format(cfg.hierarchy))
        return cfg.hierarchy
    hpath = os.path.join(cfg.data, "hierarchy.json")
    if not os.path.isfile(hpath):
        raise UsageError(
            "{}: no hierarchy.json in the data folder; pass --hierarchy FILE, or --hierarchy {} to train the flat "
            "network and learn one (`{}`)".format(cfg.data, SINGLE, commands.hierarchy_learn())
        )
    return hpath


SINGLE = "single"  # --hierarchy single: one superclass holding every class (no taxonomy yet)


def _single(root: str, cfg: TrainConfig):
    if not (os.path.isdir(os.path.join(root, "train")) and os.path.isdir(os.path.join(root, "test"))):
        raise UsageError("{}: --hierarchy {} needs train/ and test/ image folders".format(root, SINGLE))
    size, how = cfg.image_size or 32, cfg.resize
    train = datasets.load_image_folder(os.path.join(root, "train"), size, cfg.channels, resize=how)
    test = datasets.load_image_folder(os.path.join(root, "test"), size, train.channels, train.classes, resize=how)
    return train, test, hierarchy.Hierarchy(["all"], [list(train.classes)])


def _cifar_archive(path):
    from ..data.cifar import find_archive

    return find_archive(path)


class RunData:
    """The data of a run, as arrays and tensors: images, labels, hierarchy maps, input spec."""

    def __init__(self, train, test, hier, val=None, stats=None):
        self.train, self.test, self.hier, self.val = train, test, hier, val
        self.mean, self.std = stats or train.stats()  # stats: (mean, std) kept from a deployed run
        self.sup_of, self.loc_of = hier.mapping(train.classes)
        self.augmentation = {"augment": "none", "flip": False, "pad": 0, "why": "not set"}
        self.local = hier.local_index(train.classes)  # (N, classes): subclass output of each class, or -1
        self.xtr = training.to_tensor(train, self.mean, self.std)
        self.xte = training.to_tensor(test, self.mean, self.std)
        self.ytr = torch.from_numpy(train.labels)
        self.yte = torch.from_numpy(test.labels)
        self.input_spec = {
            "name": "input",
            "shape": [train.channels, train.size, train.size],
            "layout": "NCHW",
            "dtype": "float32",
            "scale": 1.0 / 255.0,
            "mean": self.mean,
            "std": self.std,
            "color": "gray" if train.channels == 1 else "rgb",
            "channels_from": train.channels_from or "the data's format",
            "classes": train.classes,
        }

    def record(self) -> dict:
        """What the run's data.json holds: the input spec and the augmentation it trained with."""
        return dict(self.input_spec, resize=self.input_spec.get("resize", "squash"), augmentation=self.augmentation)

    @classmethod
    def load(cls, cfg: TrainConfig) -> "RunData":
        train, test, hier = load_data(cfg)
        train, val = hold_out(train, cfg)
        data = cls(train, test, hier, val, stats=deployed_stats(cfg))
        if cfg.resize != "squash":  # the device brings its images to the network's size the same way
            data.input_spec["resize"] = cfg.resize
        data.augmentation = resolve_augment(cfg, data.train)
        return data


def deployed_stats(cfg: TrainConfig):
    """An update's input normalisation: the deployed run's (mean, std), which its bundle's input spec
    holds (None for a run that is no update)."""
    if not cfg.update_of:
        return None
    from ..config_check import read_json

    d = read_json(os.path.join(cfg.update_of, "data.json"), "run record")
    return d["mean"], d["std"]
