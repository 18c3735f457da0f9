"""What ``deploy`` ships: a full bundle, after its fit check, or an update bundle (its base's fit holds)."""

from __future__ import annotations

import contextlib
import os
from typing import Iterator, Optional

import click

from ..errors import UsageError


def read_update(path: str):
    """The parsed manifest of the update bundle folder *path* (None: not an update bundle)."""
    from ..bundle import manifest as M
    from ..bundle import update as U

    mpath = os.path.join(path, M.MANIFEST)
    if not os.path.isdir(path) or not os.path.isfile(mpath):
        return None
    with open(mpath, "rb") as f:
        data = f.read(M.MAX_MANIFEST_BYTES + 1)
    try:
        d = U.loads(data)
    except M.ManifestError:
        return None
    return U.check_parse(d, mpath)


@contextlib.contextmanager
def opened(path: str, profile: dict, batch: Optional[int], force: bool) -> Iterator:
    """The :class:`.driver.Source` of *path*, with its fit and version lines printed."""
    from ..bundle.reader import Bundle
    from . import fit
    from .driver import Source

    update = read_update(path)
    if update is not None:
        from ..bundle.update import describe

        for e in update.files():
            if not os.path.isfile(os.path.join(path, e.file)):
                raise UsageError("{}: missing {}; the update bundle is incomplete".format(path, e.file))
        source = Source.of_update(path, update)
        click.echo("fit: as the installed base's (an update keeps the graph, the scales and the engine)")
        click.echo("version {} ({}, {} files, release {}; {})".format(
            source.version, "signed" if source.signed else "unsigned", len(source.files), update.release,
            describe(update)))  # fmt: skip
        yield source
        return
    with Bundle.open(path) as b:
        est = fit.check(b, profile, batch, force=force)
        click.echo("fit: {}{}".format(fit.describe(est), "" if est["fits"] else " -- DOES NOT FIT (--force)"))
        source = Source(b)
        click.echo("version {} ({}, {} files, release {})".format(
            source.version, "signed" if source.signed else "unsigned", len(source.files), b.model.release))  # fmt: skip
        yield source
