"""Field checks shared by the manifest model and the hierarchy loader.

Names that reach a terminal or a file system must be printable: no control characters
(NUL, newline, ESC), no format characters (the right-to-left override, zero-width
marks), no surrogates.  Names used as file names are also single path components.
"""

from __future__ import annotations

import math
import unicodedata

MAX_NAME = 128
_BAD_CATEGORIES = ("Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp")


class FieldError(Exception):
    """A manifest or hierarchy field is wrong; ``field`` names it."""

    def __init__(self, field: str, message: str):
        self.field = field
        super().__init__("{}: {}".format(field, message))


def fail(field: str, message: str):
    raise FieldError(field, message)


def shown(value, limit: int = 40) -> str:
    """A value as it may be printed: ASCII-escaped and shortened."""
    s = ascii(value)
    return s if len(s) <= limit else s[: limit - 3] + "..."


def escaped(text: str) -> str:
    """*text* for a line of text output: control and format characters (a newline, a tab, an
    escape code, a right-to-left override) and backslashes shown as Python escapes, so no name
    can start a line of its own, drive the terminal, or pass for another name."""
    return "".join(ascii(c)[1:-1] if unicodedata.category(c) in _BAD_CATEGORIES or c == "\\" else c for c in text)


_KINDS = {int: "an integer", float: "a number", str: "a string", list: "a list", dict: "an object"}


def check(value, field: str, kind, lo=None, hi=None):
    """*value* if it is of *kind* (bools are not numbers; floats are finite) within [lo, hi]."""
    ok = isinstance(value, kind) and not isinstance(value, bool)
    if kind is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if not ok:
        fail(field, "{} is not {}".format(shown(value) if value is not None else "missing", _KINDS[kind]))
    if lo is not None and value < lo or hi is not None and value > hi:
        fail(field, "{} is out of range {}..{}".format(shown(value), lo, hi))
    return float(value) if kind is float else value


def printable(value, field: str, what: str = "name") -> str:
    s = check(value, field, str)
    if not 1 <= len(s) <= MAX_NAME:
        fail(field, "{} must have 1..{} characters, has {}".format(what, MAX_NAME, len(s)))
    for ch in s:
        if unicodedata.category(ch) in _BAD_CATEGORIES:
            fail(field, "{} {} holds an unprintable character U+{:04X}".format(what, shown(s), ord(ch)))
    if s != s.strip():
        fail(field, "{} {} has leading or trailing white space".format(what, shown(s)))
    return s


def name(value, field: str, path: bool = True) -> str:
    """A printable name; with *path*, also one path component (no '/', '\\', '.', '..')."""
    s = printable(value, field)
    if path and ("/" in s or "\\" in s or s in (".", "..")):
        fail(field, "name {} must be a single path component".format(shown(s)))
    return s


def label(value, field: str) -> str:
    """A class label: printable ('/' is fine, e.g. 'T-shirt/top'; labels never name files)."""
    return printable(value, field, "label")


def unique(values, field: str) -> None:
    seen = set()
    for v in values:
        if v in seen:
            fail(field, "duplicate name {}".format(shown(v)))
        seen.add(v)


def relpath(value, field: str, folder=None) -> str:
    """A bundle-relative file path: 1 or 2 safe components, under *folder* when given."""
    s = check(value, field, str)
    parts = s.split("/")
    if len(parts) > 2 or any(p in ("", ".", "..") or "\\" in p for p in parts):
        fail(field, "path {} is not a plain relative path inside the bundle".format(shown(s)))
    for p in parts:
        printable(p, field, "path component")
    if folder is not None and (len(parts) != 2 or parts[0] != folder):
        fail(field, "path {} is not inside {}/".format(shown(s), folder))
    return s
