"""``edgetool data``: datasets for users who are online (no torch needed)."""

from __future__ import annotations

import click


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
        "{}: {} test images, {} classes in {} superclasses; train with: edgetool train RUN --data {}".format(
            path, len(test), len(test.classes), hier.n_super, path
        )
    )
