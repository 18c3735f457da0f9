"""Workstation commands: ``devices``, ``keygen``, ``deploy``, ``rollback``, ``status``."""

from __future__ import annotations

import json
import os
import sys

import click

from .. import commands
from ..errors import DeployError, UsageError
from ..options import helped


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print the profiles as JSON.")
def devices(as_json):
    """List the device profiles (every one is validated)."""
    from edgetool.runtime import device_profiles

    from ..device_profiles import load_dir

    profiles = load_dir(device_profiles.HERE)
    if as_json:
        click.echo(json.dumps(profiles, indent=1))
        return
    click.echo(
        "{:<12} {:<4} {:<9} {:>10} {:>9} {:>9}  {}".format(
            "profile", "gpu", "precision", "budget MiB", "workspace", "max batch", "device"
        )
    )
    for p in profiles:
        click.echo(
            "{:<12} {:<4} {:<9} {:>10} {:>9} {:>9}  {}".format(
                p["name"],
                "yes" if p["gpu"] else "no",
                p["precision"],
                p["memory_budget_mb"],
                p["workspace_mb"] if p["gpu"] else "-",
                p["max_batch"],
                p["display"],
            )
        )


@click.command()
@click.argument("prefix", type=click.Path(dir_okay=False))
def keygen(prefix):
    """Make an Ed25519 signing key pair: PREFIX.key (keep it secret) and PREFIX.pub (give it to devices)."""
    from ..files import check_output
    from ..bundle.signature import keygen as make

    for suffix in (".key", ".pub"):
        check_output(prefix + suffix, "keygen")
    k = make(prefix)
    click.echo("private key {} (mode 0600), public key {}, key id {}".format(k["private"], k["public"], k["key_id"]))
    pub = os.path.basename(k["public"])
    click.echo("copy {} to each device, then run there: {}".format(k["public"], commands.target_trust("ROOT", pub)))


HELP = {
    "--host": "[user@]host to reach over SSH (repeat for several).",
    "--to": "Deploy root on this machine instead of SSH hosts (same device-side code; repeat for several).",
    "--root": "Deploy root on each host (relative paths start at the login's home).",
    "--remote-edgetool": "edgetool command on the device (e.g. /opt/venv/bin/edgetool).",
    "--port": "SSH port.",
    "--identity": "SSH private key file.",
    "--known-hosts": "known_hosts file to check host keys against.",
    "--ssh-config": "ssh_config file (ssh -F).",
    "--accept-new-host-key": "Trust a host key seen for the first time (keys that changed are still refused).",
    "--jobs": "Hosts handled in parallel.",
    "--batch": "Batch size for the fit check.",
    "--bwlimit": "Upload limit per host, KiB/s.",
    "--canary": "Deploy to the first N hosts with their doctor check first; the rest follow only if all of them pass.",
    "--max-failures": "After the canaries, hosts go in waves of --jobs; stop starting waves once more than K hosts "
    "failed.",
    "--report": "Write one JSON record per host (version, release, result, time, doctor) to this file.",
    "--allow-downgrade": "Install even where the bundle's release is older than the highest the device installed "
    "(anti-rollback; the device records the choice in its state and status).",
}
option = helped(HELP)
A_FILE = click.Path(dir_okay=False)


def target_options(f):
    """Where the targets are and how to reach them (shared by deploy, rollback and status)."""
    opts = [
        option("--host", None, "hosts", multiple=True, show_default="none: --to instead"),
        option("--to", None, "to_dir", type=click.Path(file_okay=False), multiple=True, show_default="none: --host"),
        option("--root", "edgetool-deploy"),
        option("--remote-edgetool", "edgetool"),
        option("--port", type=int, show_default="ssh's: 22 or ssh_config"),
        option("--identity", type=A_FILE, show_default="ssh's own keys"),
        option("--known-hosts", type=A_FILE, show_default="~/.ssh/known_hosts"),
        option("--ssh-config", type=A_FILE, show_default="~/.ssh/config"),
        option("--accept-new-host-key", is_flag=True, show_default=False),
        option("--jobs", 8),
    ]
    for o in reversed(opts):
        f = o(f)
    return f


def make_targets(kw):
    from .transport import LocalTransport, SSHTransport

    hosts, to_dir = kw.pop("hosts"), kw.pop("to_dir")
    if bool(hosts) == bool(to_dir):
        raise UsageError("give --host (one or more) or --to DIR, not both")
    if kw["jobs"] < 1:
        raise UsageError("--jobs must be >= 1")
    _no_twice(to_dir, "--to", os.path.realpath)
    _no_twice(hosts, "--host", lambda h: h)
    if to_dir:
        edgetool = kw["remote_edgetool"] if kw["remote_edgetool"] != "edgetool" else None
        if len(to_dir) == 1:
            return [LocalTransport(edgetool, to_dir[0])], to_dir[0]
        return [LocalTransport(edgetool, d, "local:" + d) for d in to_dir], None
    ssh = dict(
        edgetool=kw["remote_edgetool"],
        port=kw["port"],
        identity=kw["identity"],
        known_hosts=kw["known_hosts"],
        ssh_config=kw["ssh_config"],
        accept_new_host_key=kw["accept_new_host_key"],
    )
    return [SSHTransport(h, **ssh) for h in hosts], kw["root"]


def _no_twice(values, option, key) -> None:
    """A target named twice would be deployed twice at once, racing itself: refused."""
    seen: dict = {}
    for v in values:
        k = key(str(v))
        if k in seen:
            raise UsageError(
                "{} {}: the same target as {} {}; give each target once".format(option, v, option, seen[k])
            )
        seen[k] = v


def finish(results, stop=None):
    """The per-host summary; then the command ends as a signal asked (*stop*), or fails if a host did."""
    from .report import format_summary

    click.echo(format_summary(results))
    if stop is not None and stop.exc is not None:
        raise stop.exc
    failed = [r["host"] for r in results if not r["ok"] and not r.get("skipped")]
    skipped = [r["host"] for r in results if r.get("skipped")]
    if failed or skipped:
        raise DeployError(
            "{} of {} host(s) failed: {}{}".format(
                len(failed),
                len(results),
                ", ".join(failed) or "none",
                "; {} not started: {}".format(len(skipped), ", ".join(skipped)) if skipped else "",
            )
        )


@click.command()
@click.argument("bundle", type=click.Path())
@click.option("--device-profile", "profile_name", required=True, help="Profile of the targets (edgetool devices).")
@option("--batch", type=int, show_default="the profile's max_batch")
@click.option("--force", is_flag=True, help="Deploy even when the fit check says the bundle does not fit.")
@click.option("--engine-build", is_flag=True, help="Build the TensorRT engine on each device after the switch.")
@click.option("--doctor", is_flag=True, help="Run edgetool doctor on each device after the switch.")
@click.option("--keep", default=3, show_default=True, help="Versions kept per device (>= 2).")
@option("--bwlimit", type=float, show_default="no limit")
@option("--canary", 0, show_default="none")
@option("--max-failures", type=int, show_default="no limit")
@option("--report", None, "report_file", type=A_FILE, show_default="none")
@option("--allow-downgrade", is_flag=True, show_default=False)
@target_options
def deploy(
    bundle,
    profile_name,
    batch,
    force,
    engine_build,
    doctor,
    keep,
    bwlimit,
    canary,
    max_failures,
    report_file,
    allow_downgrade,
    **kw,
):
    """Ship BUNDLE to each --host (or --to DIR): stage, verify, switch atomically, roll back on failure."""
    from edgetool.runtime import device_profiles

    from .driver import deploy_one
    from .parallel import Stop
    from .report import Progress
    from .sources import opened

    targets, root = make_targets(kw)
    profile = device_profiles.load(profile_name)
    if engine_build and not profile["gpu"]:
        raise UsageError("profile {} has no GPU: --engine-build needs TensorRT on a GPU device".format(profile["name"]))
    _check_numbers(keep, batch, canary, max_failures, report_file)
    with opened(bundle, profile, batch, force) as source:
        steps = {
            "engine_profile": profile["name"] if engine_build else None,
            "doctor": doctor,
            "allow_downgrade": allow_downgrade,
        }
        live = sys.stderr.isatty() and len(targets) == 1

        stop = Stop()

        def one(t, with_doctor=False):
            s = dict(steps, doctor=True) if with_doctor else steps
            return deploy_one(t, t.root or root, source, s, keep, bwlimit, Progress(t.label, live=live), stop)

        from .rollout import rollout, write_report

        results = rollout(targets, one, canary, max_failures, kw["jobs"], stop)
    if report_file:
        write_report(report_file, results, source)
    finish(results, stop)


def _check_numbers(keep, batch, canary, max_failures, report_file) -> None:
    if keep < 2 or (batch is not None and batch < 1):
        raise UsageError("--keep must be >= 2 and --batch >= 1")
    if canary < 0 or (max_failures is not None and max_failures < 0):
        raise UsageError("--canary and --max-failures must be >= 0")
    if report_file:
        from ..files import check_output

        check_output(report_file, "--report")


def remote_all(kw, sub, extra=()):
    """``edgetool target SUB ROOT --json EXTRA`` on every target, as per-host results."""
    from .driver import remote_call
    from .parallel import on_all

    targets, root = make_targets(kw)
    return on_all(
        targets, lambda t: remote_call(t, ["target", sub, t.root or root, "--json"] + list(extra)), kw["jobs"]
    )


@click.command()
@click.option("--version", default=None, show_default="the previous one", help="Version to switch to.")
@target_options
def rollback(version, **kw):
    """Switch each target back to its previous version (or --version)."""
    results = remote_all(kw, "rollback", ["--to", version] if version else [])
    for r in results:
        if r["ok"]:
            r["detail"] = "current {} (was {})".format(r["reply"]["version"], r["reply"]["previous"])
    finish(results)


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object per host.")
@target_options
def status(as_json, **kw):
    """Versions present, current, previous and the last doctor result of each target."""
    from ..target.status import format_status, model_summary

    results = remote_all(kw, "status")
    for r in results:
        if as_json:
            click.echo(json.dumps(dict(r.get("reply", {}), host=r["host"], ok=r["ok"], error=r.get("error"))))
        elif r["ok"]:
            click.echo("== {}\n{}".format(r["host"], format_status(r["reply"])))
        model = model_summary(r["reply"].get("model")) if r["ok"] else ""
        r["detail"] = ""
        if r["ok"]:
            r["detail"] = "current {}{}".format(r["reply"]["current"], " ({})".format(model) if model else "")
    if as_json:
        failed = [r["host"] for r in results if not r["ok"]]
        if failed:
            raise DeployError("{} host(s) failed: {}".format(len(failed), ", ".join(failed)))
    else:
        finish(results)
