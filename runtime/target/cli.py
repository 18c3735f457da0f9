"""``edgetool target``: the device side of deploy, run over SSH (or locally for ``deploy --to DIR``).

Every subcommand takes the deployment ROOT first. prepare/receive/install print one JSON
object on stdout for the workstation to read.
"""

from __future__ import annotations

import json
import sys

import click


def _target(root):
    from .install import Target

    return Target(root)


def _emit(obj):
    click.echo(json.dumps(obj, sort_keys=True))


@click.group()
def target():
    """Device side of deploy: receive, verify, install, roll back; trust keys."""


@target.command()
@click.argument("root")
@click.argument("version")
def prepare(root, version):
    """Make the staging folder of VERSION; list its files already received."""
    _emit(_target(root).prepare(version))


@target.command()
@click.argument("root")
@click.argument("version")
def receive(root, version):
    """Read files of VERSION from standard input: per file a JSON header line, then its bytes."""
    _emit(_target(root).receive_stream(version, sys.stdin.buffer))


@target.command()
@click.argument("root")
@click.argument("version")
@click.option(
    "--engine-build",
    "engine_profile",
    default=None,
    show_default="no engine build",
    help="Build the TensorRT engine for this profile.",
)
@click.option("--doctor", is_flag=True, help="Run edgetool doctor on the new version.")
@click.option("--keep", default=3, show_default=True, help="Versions to keep (current and previous always stay).")
@click.option(
    "--allow-downgrade", is_flag=True, help="Install a release older than the highest installed here (recorded)."
)
def install(root, version, engine_profile, doctor, keep, allow_downgrade):
    """Verify the staged VERSION (signature, checksums), switch current to it; roll back if a step fails."""
    from .steps import run_steps

    t = _target(root)
    info = t.install(version, keep=keep, allow_downgrade=allow_downgrade)
    info.update(run_steps(t, version, engine_profile, doctor))
    _emit(info)


@target.command()
@click.argument("root")
@click.option(
    "--version",
    "--to",
    "to",
    default=None,
    show_default="the previous one",
    help="Version to switch to (as `edgetool rollback --version`; --to is the older spelling).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the resulting state as JSON.")
def rollback(root, to, as_json):
    """Switch current back to the previous version (or --version VERSION)."""
    res = _target(root).rollback(to)
    _emit(res) if as_json else click.echo("current: {} (was {})".format(res["version"], res["previous"]))


@target.command()
@click.argument("root")
@click.option("--json", "as_json", is_flag=True, help="Print the state as JSON.")
def status(root, as_json):
    """Versions present, current, previous, last doctor result."""
    st = _target(root).status()
    if as_json:
        _emit(st)
    else:
        from .status import format_status

        click.echo(format_status(st))


@target.command()
@click.argument("root")
def repair(root):
    """Rebuild ROOT/state.json from the versions on disk (after it was lost or damaged); the
    anti-rollback counter becomes the highest release installed (or the old counter, if readable
    and higher)."""
    st = _target(root).repair()
    click.echo(
        "{}: state rebuilt: current {}, previous {}, highest release {} (the anti-rollback counter: "
        "older releases are refused)".format(root, st["current"], st["previous"], st["highest_release"])
    )


@target.command("reset-counter")
@click.argument("root")
@click.option(
    "--release",
    type=int,
    default=None,
    show_default="the highest release of the versions installed here",
    help="The value to set the anti-rollback counter to.",
)
def reset_counter(root, release):
    """Set ROOT's anti-rollback counter (after state.json was lost or damaged): bundles with an older
    release are refused from then on; a release between this value and a higher lost one is accepted."""
    res = _target(root).reset_counter(release)
    click.echo(
        "{}: anti-rollback counter set to {} (was {}); releases below {} are refused from now on{}".format(
            root,
            res["highest_release"],
            res["was"],
            res["highest_release"],
            ""
            if res["highest_release"] >= res["from_disk"]
            else "; note: versions installed here carry release {}".format(res["from_disk"]),
        )
    )


@target.command()
@click.argument("root")
@click.argument("public_key", type=click.Path(exists=True, dir_okay=False))
def trust(root, public_key):
    """Trust bundles signed by PUBLIC_KEY (made by `edgetool keygen`) on this device."""
    kid = _target(root).trust(public_key)
    click.echo("trusted key {} in {}".format(kid, _target(root).p("trust")))


@target.command()
@click.argument("root")
@click.argument("key_id")
def untrust(root, key_id):
    """Revoke KEY_ID on this device: bundles it signed are refused from now on."""
    res = _target(root).untrust(key_id)
    click.echo("revoked key {} in {} (removed {})".format(key_id, _target(root).p("trust"), ", ".join(res["removed"])))


@target.command()
@click.argument("root")
@click.option(
    "--accept-unsigned/--require-signed",
    default=None,
    required=True,
    help="Whether this device installs bundles that carry no signature.",
)
def config(root, accept_unsigned):
    """Device policy: accept unsigned bundles, or require a trusted signature (the default)."""
    cfg = _target(root).set_config(accept_unsigned=accept_unsigned)
    click.echo("{}: accept_unsigned = {}".format(root, str(cfg["accept_unsigned"]).lower()))


@target.command("service")
@click.argument("root")
@click.argument("input_uri", metavar="[INPUT]", required=False, default="csi://0")
@click.argument("output", required=False)
@click.option(
    "--out",
    "unit_path",
    default="edgetool-serve.service",
    show_default=True,
    type=click.Path(dir_okay=False),
    help="The unit file to write (nothing is installed or enabled here).",
)
@click.option("--user", default=None, show_default="the user running this", help="The user the service runs as.")
@click.option(
    "--serve-args",
    default="--headless",
    show_default=True,
    help='More options of edgetool serve, as one string (e.g. "--headless --json-out /var/log/labels.jsonl"); '
    "a relative path in them is taken from this directory, the service's working directory.",
)
def service(root, input_uri, output, unit_path, user, serve_args):
    """Write a systemd unit that runs `edgetool serve ROOT INPUT [OUTPUT]`, following every deploy
    and rollback of ROOT; install and enable it yourself (the command says how).  ROOT, and INPUT and
    OUTPUT where they are local paths, are written absolute; the service runs in this directory."""
    import os
    import shlex

    from ..errors import UsageError
    from ..files import check_output, write_bytes_atomic
    from .service import unit_text

    if not os.path.isdir(root):
        raise UsageError("{}: no such deploy root".format(root))
    check_output(unit_path, "--out")
    try:
        extra = shlex.split(serve_args)
    except ValueError as exc:
        raise UsageError("--serve-args: {}".format(exc)) from None
    write_bytes_atomic(unit_path, unit_text(root, input_uri, output, extra, user).encode("utf-8"))
    name = shlex.quote(os.path.basename(unit_path))
    click.echo("wrote {}; to run it at boot: sudo cp {} /etc/systemd/system/ && sudo systemctl daemon-reload "
               "&& sudo systemctl enable --now {}".format(unit_path, shlex.quote(unit_path), name))  # fmt: skip
