"""``edgetool mender``: a bundle as a Mender artifact (workstation), the update module that installs it
(device), and the module itself, as the Mender client runs it."""

from __future__ import annotations

import os

import click

from .. import commands
from ..errors import MissingDependencyError, UsageError


@click.group()
def mender():
    """Ship bundles through Mender: artifacts, and the update module that installs them."""


@mender.command()
@click.argument("bundle", type=click.Path())
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="The artifact to write (NAME.mender).")
@click.option(
    "--device-type",
    "device_types",
    multiple=True,
    required=True,
    help="A Mender device type that takes this bundle (repeat for several).",
)
@click.option("--name", default=None, show_default="the bundle's deploy version", help="The artifact's name.")
def artifact(bundle, out, device_types, name):
    """Write BUNDLE as a Mender artifact of type edgetool-bundle (with mender-artifact), providing its
    version and release."""
    from .artifact import write_artifact

    info = write_artifact(bundle, out, device_types, name)
    click.echo(
        "wrote {} (Mender artifact {}, type {}, device type {}; version {}, release {}, {}, {} files)".format(
            out,
            info["name"],
            info["type"],
            ", ".join(info["device_types"]),
            info["version"],
            info["release"],
            "signed by key {}".format(info["signed_by"]) if info["signed_by"] else "unsigned",
            info["files"],
        )
    )
    click.echo(
        "deploy it with Mender; each device needs the update module once: `{}`".format(commands.mender_install_module())
    )


@mender.command("install-module")
@click.argument("root")
@click.option("--device-profile", "profile", required=True, help="This device's profile (edgetool devices).")
@click.option("--keep", default=3, show_default=True, help="Versions to keep (current and previous always stay).")
@click.option(
    "--modules-dir",
    default=None,
    show_default="/usr/share/mender/modules/v3",
    type=click.Path(file_okay=False),
    help="The Mender client's update module folder.",
)
def install_module(root, profile, keep, modules_dir):
    """Install the Mender update module edgetool-bundle on this device: artifacts of that type are
    installed into the deploy ROOT, as an SSH deploy installs them (`edgetool serve ROOT` follows)."""
    from edgetool.runtime import device_profiles

    from ..files import write_bytes_atomic
    from .shim import DEFAULT_DIR, script_text

    device_profiles.load(profile)  # one error line now rather than on the first deployment
    text = script_text(root, profile, keep)
    folder = modules_dir or DEFAULT_DIR
    if not os.path.isdir(folder):
        if modules_dir is None:
            raise MissingDependencyError("mender-client")
        raise UsageError("--modules-dir {}: no such folder".format(folder))
    path = os.path.join(folder, "edgetool-bundle")
    write_bytes_atomic(path, text.encode("utf-8"), mode=0o755)
    root = os.path.abspath(root)
    click.echo("installed the Mender update module {} (deploy root {}, device profile {})".format(path, root, profile))
    click.echo("trust the key that signs your bundles here: `{}`".format(commands.target_trust(root)))


@mender.command("module", hidden=True)
@click.argument("state")
@click.argument("tree", type=click.Path())
@click.option("--root", required=True, help="The deploy root.")
@click.option("--device-profile", "profile", required=True, help="This device's profile.")
@click.option("--keep", default=3, show_default=True, help="Versions to keep.")
def module(state, tree, root, profile, keep):
    """The update module, as the Mender client runs it: STATE on the client's FILE_TREE."""
    from edgetool.runtime import device_profiles

    from .module import ANSWERS, UpdateModule

    if state in ANSWERS:
        click.echo(ANSWERS[state])
        return
    said = UpdateModule(tree, root, device_profiles.load(profile), keep).run(state)
    if said:
        click.echo("edgetool-bundle {}: {}".format(state, said), err=True)
