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
    """An optional dependency is not installed."""

    def __init__(self, module, extra):
        self.module = module
        self.extra = extra
        super().__init__(
            "{} is not installed; install it with: pip install 'edgetool[{}]'".format(module, extra)
        )


class SourceError(EdgetoolError):
    """A camera, stream, video file or image folder cannot be opened, or was lost for good."""


class DeviceError(EdgetoolError):
    """The device lacks what the command needs (GPU, TensorRT, int8 support, ...)."""


def require(module, extra):
    """Import *module* or raise :class:`MissingDependencyError` naming the extra to install."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise MissingDependencyError(module, extra) from None
