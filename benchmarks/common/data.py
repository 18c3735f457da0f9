"""The datasets behind the benchmarks, from ../shared/datasets: Fashion-MNIST (IDX), CIFAR-10
(JPEG folders, unpacked once into WORK/data) and Caltech-101 (the course split, as symlinked
train/ and test/ folders)."""

from __future__ import annotations

import os
import tarfile

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SHARED = os.path.join(os.path.dirname(ROOT), "shared", "datasets")


def dataset_dir(name, work, root=SHARED):
    if name == "fashion-mnist":
        return os.path.join(root, "fashion-mnist"), None
    if name == "cifar10":
        src = os.path.join(root, "cifar10-jpg")
        dest = os.path.join(work, "data")
        root = os.path.join(dest, "CIFAR-10-images")
        if not os.path.isdir(os.path.join(root, "test")):
            os.makedirs(dest, exist_ok=True)
            with tarfile.open(os.path.join(src, "CIFAR-10-images.tar.gz")) as tar:
                tar.extractall(dest, filter="data")
        return root, os.path.join(src, "hierarchy.json")
    raise SystemExit("unknown dataset {}".format(name))


def caltech_dir(work, background=True):
    """Caltech-101 as train/ and test/ image folders (symlinks), from the course split in splits/;
    *background* False leaves out BACKGROUND_Google (101 classes, as torchvision's Caltech101)."""
    src = os.path.join(SHARED, "caltech101")
    dest = os.path.join(work, "data")
    for split in ("train", "test"):
        with open(os.path.join(src, "splits", "mldl2020_{}.txt".format(split))) as f:
            rel = [line.strip() for line in f if line.strip().endswith(".jpg")]
        if not background:
            rel = [r for r in rel if not r.startswith("BACKGROUND_Google/")]
        for r in rel:
            link = os.path.join(dest, split, r)
            if not os.path.lexists(link):
                os.makedirs(os.path.dirname(link), exist_ok=True)
                os.symlink(os.path.join(src, "101_ObjectCategories", r), link)
    return dest, None


def data_source(name, work):
    """(data folder, hierarchy file or None) of fashion-mnist, cifar10 or caltech101."""
    if name == "caltech101":
        return caltech_dir(work)
    return dataset_dir(name, work)


def cifar10_subset(work, n_train, n_test):
    """A fixed, class-balanced part of CIFAR-10 (the first *n*/10 images of each class, in the
    official order) as symlinked train/ and test/ folders in WORK/data-<n_train>-<n_test>: every
    seed trains and tests on the same photos, so one trunk cache serves them all."""
    full, _ = dataset_dir("cifar10", work)
    dest = os.path.join(work, "data-{}-{}".format(n_train, n_test))
    for split, n in (("train", n_train), ("test", n_test)):
        for c in sorted(os.listdir(os.path.join(full, split))):
            files = sorted(os.listdir(os.path.join(full, split, c)))[: n // 10]
            os.makedirs(os.path.join(dest, split, c), exist_ok=True)
            for f in files:
                link = os.path.join(dest, split, c, f)
                if not os.path.lexists(link):
                    os.symlink(os.path.join(full, split, c, f), link)
    return dest
