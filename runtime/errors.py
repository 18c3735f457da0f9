"""The one exception hierarchy of edgetool.

Every error a user can cause derives from :class:`EdgetoolError`; the CLI prints its
message on one line and exits non-zero, without a traceback.
"""

from __future__ import annotations


class EdgetoolError(Exception):
    """Base class of every user-facing edgetool error."""

    exit_code = 1


class UsageError(EdgetoolError):
    """Bad argument or bad input path."""

    exit_code = 2


class BundleError(EdgetoolError):
    """A bundle file is missing, corrupt, or disagrees with its manifest."""

    def __init__(self, path, message):
        self.path = str(path)
        super().__init__("{}: {}".format(self.path, message))


class CodecError(EdgetoolError):
    """A delta file cannot be decoded."""


class BackendError(EdgetoolError):
    """An inference backend failed (build, load, run or switch)."""


class SwitchError(BackendError):
    """A subclass switch failed; the previous weights keep serving."""


class MissingDependencyError(EdgetoolError):
    """An optional dependency is not installed; the message says how to get it on this machine."""

    def __init__(self, module, extra=None):
        from .choices import install_hint
        from .machine import is_jetson

        self.module = module
        if extra is not None:
            self.hint = "install it with: pip install 'edgetool[{}]'".format(extra)
        else:
            self.hint = install_hint(module, is_jetson())
        super().__init__("{} is not installed{}".format(module, "" if self.hint is None else "; " + self.hint))


class OutputError(EdgetoolError):
    """An output cannot be written (a full disk, a place where no file can be made, a folder in the
    way); nothing half-written is left under the output's name."""


class SourceError(EdgetoolError):
    """A camera, stream, video file or image folder cannot be opened, or was lost for good."""


class DeviceError(EdgetoolError):
    """The device lacks what the command needs (GPU, TensorRT, int8 support, ...)."""


def require(module, extra=None):
    """Import *module* or raise :class:`MissingDependencyError` saying how to get it.

    Without *extra*, :func:`edgetool.runtime.choices.install_hint` says, for a Jetson or elsewhere.
    """
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise MissingDependencyError(module, extra) from None


class DeployError(EdgetoolError):
    """A deploy, rollback or status step failed on a target (transfer, install, signature, fit)."""


class SignatureError(DeployError):
    """A bundle is unsigned, wrongly signed, or signed by a key the device does not trust."""


class StoppedError(DeployError):
    """A host's deploy stopped by a signal before it changed anything there."""
