"""``edgetool data``: datasets for users who are online (no torch needed)."""

from __future__ import annotations

import os

import click
import numpy as np

from edgetool.runtime import commands
from edgetool.runtime.files import slug


@click.group()
def data():
    """Datasets."""


@data.command("download")
@click.argument("name", type=click.Choice(["cifar10", "cifar100"]))
@click.option(
    "--dir", "dest", default="data", show_default=True, type=click.Path(), help="Folder to store the archive in."
)
@click.option("--url", default=None, show_default="the official archive's URL", help="Mirror URL of the archive.")
@click.option("--md5", default=None, show_default="the official archive's", help="Expected md5.")
def download(name, dest, url, md5):
    """Download the official NAME python archive into --dir and verify its checksum."""
    from .cifar import download as fetch, load_archive

    path = fetch(name, dest, url=url, md5=md5)
    test, hier = load_archive(path, "test")
    click.echo(
        "{}: {} test images, {} classes in {} superclasses; train with: {}".format(
            path, len(test), len(test.classes), hier.n_super, commands.train_new_run(path)
        )
    )


@data.command("sample-images")
@click.argument("out", type=click.Path())
@click.option(
    "--per-class",
    default="3",
    show_default=True,
    help="Test images of each class: 1 to 150, or 'all' (the whole test split, 1,500 images: what the demo measures).",
)
def sample_images(out, per_class):
    """Write the first --per-class test images of each class of the shipped Fashion-MNIST sample as
    PNGs into OUT/<class>/, to try `edgetool classify` (or `camera`) on images no network was trained
    on; `edgetool classify BUNDLE OUT --eval` measures a bundle on them."""
    from edgetool.runtime.errors import UsageError, require
    from edgetool.runtime.files import check_output

    require("PIL", "cpu")
    from PIL import Image

    from .folders import load_sample

    text = str(per_class).strip().lower()
    count = 150 if text == "all" else (int(text) if text.isdigit() else 0)
    if not 1 <= count <= 150:
        raise UsageError(
            "--per-class must be 1 to 150 or 'all' (the sample has 150 test images of each class), got {}".format(
                ascii(per_class)[:40]
            )
        )
    check_output(out, "sample-images folder", folder=True)
    test = load_sample("test")
    written = 0
    for c, name in enumerate(test.classes):
        folder = os.path.join(out, slug(name))
        os.makedirs(folder, exist_ok=True)
        for n, i in enumerate(np.nonzero(test.labels == c)[0][:count]):
            Image.fromarray(test.images[i, :, :, 0]).save(os.path.join(folder, "{:03d}.png".format(n)))
            written += 1
    click.echo("{} images of {} classes in {}; try: {}".format(written, len(test.classes), out, commands.classify(out)))
