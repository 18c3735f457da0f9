"""The ``edgetool`` command.

The root sits at the bottom layer: it imports no torch and loads every subcommand lazily
by name, so device-side commands work on a Jetson without the workstation extras.
"""

from __future__ import annotations

import importlib
import os
import signal
import sys

import click

from edgetool import __version__

# command name -> "module:attribute" (the module relative to edgetool, or absolute)
ENTRY = {
    "data": ".toolchain.data.cli:data",
    "demo": ".toolchain.cli:demo",
    "train": ".toolchain.cli:train",
    "hierarchy": ".toolchain.hierarchy.cli:hierarchy",
    "evaluate": ".toolchain.evaluate.cli:evaluate",
    "export": ".toolchain.export_cli:export",
    "camera": ".runtime.camera.cli:camera",
    "serve": ".runtime.camera.cli:serve_command",
    "classify": ".runtime.cli:classify",
    "inspect": ".runtime.cli:inspect_cmd",
    "profile": ".runtime.profile.cli:profile",
    "doctor": ".runtime.cli:doctor",
    "engine": ".runtime.trt.cli:engine",
    "devices": ".runtime.deploy.cli:devices",
    "keygen": ".runtime.deploy.cli:keygen",
    "deploy": ".runtime.deploy.cli:deploy",
    "rollback": ".runtime.deploy.cli:rollback",
    "status": ".runtime.deploy.cli:status",
    "target": ".runtime.target.cli:target",
    "mender": ".runtime.mender.cli:mender",
}
# command name -> one line of help, shown without importing the command
SUMMARY = {
    "data": "Download datasets (CIFAR-10/100 official archives, checksum-verified).",
    "demo": "Train, export and run Super-Sub on the shipped sample (offline).",
    "train": "Train every network of a Super-Sub run (resumable).",
    "hierarchy": "Learn a class hierarchy from a confusion matrix or a trained flat network.",
    "evaluate": "Report bounds, vanilla vs efficient accuracy, deltas and storage.",
    "export": "Write a bundle (base.onnx + int8 deltas) from a training run.",
    "camera": "Classify camera, stream, video or image-folder frames live.",
    "serve": "The camera loop on what a deploy root serves, following its deploys and rollbacks.",
    "classify": "Classify images with a bundle (two-stage).",
    "inspect": "Verify a bundle and print its manifest summary.",
    "profile": "Latency and memory reports of a bundle.",
    "doctor": "Check this device: GPU, CUDA kernel, TensorRT vs ONNX Runtime.",
    "engine": "TensorRT engine of a bundle: build it here, or write its model for trtexec/polygraphy.",
    "devices": "List the device profiles (validated), with memory budgets.",
    "keygen": "Make an Ed25519 key pair for signing bundles.",
    "deploy": "Ship a bundle to devices over SSH: fit, verify, switch.",
    "rollback": "Switch devices back to their previous bundle version.",
    "status": "Bundle versions on devices: current, previous, doctor.",
    "target": "Device side of deploy: stage, install, trust.",
    "mender": "Ship bundles through Mender: artifacts, and the update module that installs them.",
}
COMMANDS = {name: (*ENTRY[name].split(":"), SUMMARY[name]) for name in ENTRY}  # (module, attribute, help)


class LazyGroup(click.Group):
    def list_commands(self, ctx):
        return sorted(COMMANDS)

    def get_command(self, ctx, name):
        if name not in COMMANDS:
            return None
        module, attr, _ = COMMANDS[name]
        try:
            mod = importlib.import_module(module, "edgetool")
        except ImportError as exc:
            missing = getattr(exc, "module", None) or getattr(exc, "name", None) or str(exc)
            return _missing_command(name, missing)
        return _with_verbosity(getattr(mod, attr))

    def format_commands(self, ctx, formatter):
        rows = [(n, COMMANDS[n][2]) for n in self.list_commands(ctx)]
        with formatter.section("Commands"):
            formatter.write_dl(rows)


def _with_verbosity(cmd):
    """Every command takes -v/-q after its name too (as `train -v`), with the root's meaning."""
    if isinstance(cmd, click.Group):
        for sub in cmd.commands.values():
            _with_verbosity(sub)
        return cmd
    if any(p.name in ("verbose", "quiet") for p in cmd.params) or cmd.callback is None:
        return cmd
    from edgetool.runtime.options import verbosity_options

    callback = verbosity_options(cmd.callback)  # the options every workstation command declares itself
    cmd.params += list(reversed(callback.__click_params__))
    del callback.__click_params__
    cmd.callback = callback
    return cmd


def _missing_command(name, module):
    @click.command(name=name, context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
    def cmd():
        from edgetool.runtime.errors import MissingDependencyError

        raise MissingDependencyError(module)

    return cmd


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="edgetool")
@click.option("-v", "--verbose", count=True, help="More log output on stderr (-vv: debug, TensorRT verbose).")
@click.option("-q", "--quiet", is_flag=True, help="Errors only on stderr.")
def cli(verbose, quiet):
    """Two-stage Super-Sub image classifiers, from the workstation to NVIDIA Jetson."""
    from edgetool.runtime.log import configure

    configure(-1 if quiet else verbose)


def main(argv=None):
    from edgetool.runtime import signals

    signals.install()
    try:
        _run(argv)
    finally:
        signals.restore()  # a signal during the interpreter's teardown ends it as 128 + N, no traceback
        if os.environ.get("EDGETOOL_FAULT_KILL") == "exit:SIGTERM":  # fault-injection tests
            os.kill(os.getpid(), signal.SIGTERM)


def _run(argv):
    from edgetool.runtime import signals
    from edgetool.runtime.errors import EdgetoolError, MissingDependencyError

    try:
        try:
            cli.main(args=argv, prog_name="edgetool", standalone_mode=False)
        except (EdgetoolError, click.ClickException) as exc:
            term = signals.received()
            if term is not None:  # a signal whose exception a C extension replaced with this error
                raise term from exc
            raise
    except EdgetoolError as exc:
        from edgetool.runtime.bundle.names import escaped

        click.echo("error: {}".format(escaped(str(exc))), err=True)  # one line, whatever a name holds
        sys.exit(exc.exit_code)
    except ModuleNotFoundError as exc:
        missing = MissingDependencyError((exc.name or "").split(".")[0])
        if missing.hint is None:
            raise
        click.echo("error: {}".format(missing), err=True)
        sys.exit(1)
    except click.exceptions.Abort as exc:
        term = signals.terminated_by(exc)
        click.echo("terminated by {}".format(term) if term else "aborted", err=True)
        sys.exit(128 + term.signum if term else 130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except KeyboardInterrupt as exc:
        term = signals.terminated_by(exc)
        click.echo("terminated by {}".format(term) if term else "interrupted", err=True)
        sys.exit(128 + term.signum if term else 130)
    term = signals.received()
    if term is not None:  # a signal whose exception C code swallowed: the command still ends as terminated
        click.echo("terminated by {}".format(term), err=True)
        sys.exit(128 + term.signum)
    sys.exit(0)
