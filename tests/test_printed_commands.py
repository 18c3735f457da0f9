"""Every command line the product prints for a user to run runs as printed.

* Every edgetool command line comes from a builder of ``runtime/commands.py``; each builder's line is
  parsed by the real command-line interface (click: the command exists, its required arguments and
  options are there, its choices are valid), and the ones that can run in a test are run.
* No other string of the product writes ``edgetool <command> <argument>`` (an AST scan); a bare
  command name in a sentence ("`edgetool status` shows it") is a reference, allowed when the
  command exists.
* The systemd unit's ExecStart parses as an `edgetool serve` command line.
* The verdict's command is run on a real training run by tests/runtime/test_device_commands_agree.py.
* trtexec cannot run here: tests/runtime/trt/test_trtexec_lines.py checks its lines against the flags
  of each TensorRT release's trtexec.
"""

import ast
import glob
import os
import re
import shlex

import click
import pytest

from conftest import ROOT, run_cli

from edgetool.cli import cli
from edgetool.runtime import commands

PRODUCT = ("edgetool", "runtime", "toolchain", "export", "device_profiles")
# references to an option of another command, in help text: not a command to run
REFERENCES = {"Version to switch to (as `edgetool rollback --version`; --to is the older spelling)."}


def resolve(argv):
    """(the click command, its name, the remaining arguments) of ``edgetool ARGV``."""
    ctx = click.Context(cli, info_name="edgetool")
    cmd, name, args = cli, "edgetool", list(argv)
    while isinstance(cmd, click.Group):
        if not args:
            return cmd, name, args
        sub = cmd.get_command(ctx, args[0])
        if sub is None:
            raise AssertionError("no command {!r} under {!r}".format(args[0], name))
        cmd, name, args = sub, args[0], args[1:]
    return cmd, name, args


def parses(line):
    """Parse *line* as the CLI would, without running the command: a click error fails the test."""
    argv = shlex.split(line)
    assert argv[0] == "edgetool", line
    cmd, name, args = resolve(argv[1:])
    assert not isinstance(cmd, click.Group), "{}: a group, not a command".format(line)
    try:
        cmd.make_context(name, args)
    except click.exceptions.Exit:  # --help, --version: parsed, and they print
        pass
    except click.ClickException as exc:
        pytest.fail("{}: {}".format(line, exc.format_message()))


PLACEHOLDER = re.compile(r"^[A-Z][A-Z0-9_]+(\.[a-z]+)?$")


@pytest.mark.parametrize("name", sorted(commands.BUILDERS))
def test_every_builder_prints_a_command_that_parses(name, tmp_path, monkeypatch):
    """Each builder's line; its capital-letter files (KEY.pub) exist, as the user's own would."""
    builder, example = commands.BUILDERS[name]
    text = builder(*example)
    monkeypatch.chdir(tmp_path)
    for word in shlex.split(text):
        if PLACEHOLDER.match(word) and "." in word:
            (tmp_path / word).touch()
    parses(text)


def test_parsing_catches_a_command_that_cannot_run():
    """The check fails on what the verdict used to print (export without --out), and on unknown commands."""
    with pytest.raises(pytest.fail.Exception, match="Missing option '--out'"):
        parses("edgetool export runs/digits --model flat")
    with pytest.raises(AssertionError, match="no command"):
        parses("edgetool exports RUN")
    parses(commands.export_model("runs/digits", "flat"))


def _literals():
    """(file, line, text) of every string constant of the product that is not a docstring."""
    for top in PRODUCT:
        for folder, _, files in os.walk(os.path.join(ROOT, top)):
            for f in files:
                path = os.path.join(folder, f)
                if not f.endswith(".py") or path == commands.__file__:
                    continue
                tree = ast.parse(open(path).read())
                docs = {
                    id(n.body[0].value)
                    for n in ast.walk(tree)
                    if isinstance(n, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
                    and n.body
                    and isinstance(n.body[0], ast.Expr)
                    and isinstance(n.body[0].value, ast.Constant)
                }
                for n in ast.walk(tree):
                    if isinstance(n, ast.Constant) and isinstance(n.value, str) and id(n) not in docs:
                        yield os.path.relpath(path, ROOT), n.lineno, n.value


WORDS = re.compile(r"edgetool((?: [a-z][a-z0-9-]*)+)")
END = re.compile(r"[`'\"();:,<\n]|\.(?:\s|$)")  # where the words after a command end: quotes, brackets, a stop
ARGUMENT = re.compile(r"^(--?[A-Za-z]|\{|[A-Z][A-Z0-9_]+(\.\w+)?$|\S*[/.]\S*\w)")  # option, field, PLACEHOLDER, path


def command_lines(text):
    """The command lines *text* writes: ``edgetool <command path>`` with an argument or option after it
    (an option, a format field, a capital-letter placeholder or a path; plain words are prose)."""
    out = []
    ctx = click.Context(cli, info_name="edgetool")
    for m in WORDS.finditer(text):
        words = m.group(1).split()
        cmd, depth = cli, 0
        while depth < len(words) and isinstance(cmd, click.Group) and cmd.get_command(ctx, words[depth]):
            cmd, depth = cmd.get_command(ctx, words[depth]), depth + 1
        if depth == 0:
            continue  # "edgetool gave", "edgetool bundle": words, not a command
        path = "edgetool " + " ".join(words[:depth])
        tail = text[text.index(path, m.start()) + len(path) :]
        tokens = END.split(tail, maxsplit=1)[0].split()
        if any(ARGUMENT.match(t) for t in tokens):
            out.append(path + " " + " ".join(tokens))
    return out


def test_no_command_line_is_written_outside_the_builders():
    found = [
        "{}:{}: {}".format(path, line, c)
        for path, line, text in _literals()
        if text not in REFERENCES
        for c in command_lines(text)
    ]
    assert not found, "build these with edgetool.runtime.commands:\n" + "\n".join(found)


def test_the_scan_finds_a_command_line_and_passes_a_mention():
    assert command_lines("run `edgetool train {} --modes qat` first") == ["edgetool train {} --modes qat"]
    assert command_lines("no bundle given (edgetool doctor BUNDLE checks it)")
    assert command_lines("`edgetool status` shows it; this edgetool reads x") == []
    assert command_lines("rebuild it with edgetool engine build, or --refit-all") == []
    assert command_lines("Run edgetool doctor on the new version.") == []
    assert command_lines("<title>edgetool profile</title>") == []
    assert command_lines("then run there: edgetool target trust ROOT {}") == ["edgetool target trust ROOT {}"]


def test_the_service_unit_runs_an_edgetool_serve_command():
    from edgetool.runtime.target.service import unit_text

    text = unit_text("/var/lib/edgetool", "csi://0", None, ["--headless", "--json-out", "/var/log/l.jsonl"])
    argv = shlex.split(text.split("ExecStart=", 1)[1].splitlines()[0])
    assert argv[1:4] == ["-I", "-m", "edgetool"]
    parses(" ".join(shlex.quote(a) for a in ["edgetool"] + argv[4:]))


def test_printed_commands_that_can_run_here_run(tmp_path):
    """keygen, target trust and target repair, each run as its builder prints it (paths substituted for
    the capital-letter placeholders only)."""
    pytest.importorskip("cryptography")
    root = tmp_path / "root"
    key = tmp_path / "k"
    for line in (
        commands.keygen().replace("KEY", str(key)),
        commands.target_trust(str(root), str(key) + ".pub"),
        commands.target_repair(str(root)),
    ):
        proc = run_cli(*shlex.split(line)[1:])
        assert proc.returncode == 0, (line, proc.stderr)


def _doc_commands():
    """(file, command) of every edgetool command the README and the user guide show as one to type: a
    code span or a line of a shell code block with arguments after the command, without usage syntax
    ([optional], a|b, ...); `edgetool export --archive` names an option, and is left alone."""
    docs = [os.path.join(ROOT, "README.md")] + sorted(glob.glob(os.path.join(ROOT, "docs", "*.md")))
    for path in docs:
        text = open(path).read()
        spans = re.findall(r"`(edgetool [^`]+)`", text)
        for block in re.findall(r"```(?:bash|sh)\n(.*?)```", text, re.S):
            spans += [ln.split("#")[0].strip() for ln in block.splitlines() if ln.strip().startswith("edgetool ")]
        for span in spans:
            span = span.split(" && ")[0].split(" > ")[0].split(" | ")[0].strip()
            if any(s in span for s in ("[", "|", "...", "\u2026", "<", "\\")):
                continue  # usage syntax, not a command to type
            argv = shlex.split(span)[1:]
            rest = resolve(argv)[2] if argv and not argv[0].startswith("-") else []  # not the root's options
            if rest and not rest[0].startswith("-"):  # arguments: a command (not a name, or `export --archive`)
                yield os.path.relpath(path, ROOT), span


def test_the_documented_commands_parse(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    bad, n = [], 0
    for path, span in _doc_commands():
        n += 1
        for word in shlex.split(span):
            if PLACEHOLDER.match(word) and "." in word:
                (tmp_path / word).touch()
        try:
            parses(span)
        except (AssertionError, pytest.fail.Exception) as exc:
            bad.append("{}: {}".format(path, exc))
    assert n > 20 and not bad, "\n".join(bad)
