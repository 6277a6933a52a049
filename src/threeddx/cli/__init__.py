"""The ``3ddx`` command line: one module per command, no domain logic (that lives in the library).

Each module has ``add(subparsers)`` (its options) and ``run(args)`` (calls the
library, prints). :func:`main` keeps one rule for every command: bad input
(a missing or corrupt file, a wrong setting, a mistyped option) ends with one
line on stderr, ``3ddx: error: ...``, and exit code 2; outputs are written
all or nothing (:func:`threeddx.io.result_folder`).
"""
from __future__ import annotations

import argparse
import difflib
import os
import signal
import sys
import warnings
from typing import Sequence

from threeddx import __version__
from threeddx.errors import InputError
from . import demo, evaluate, inspect_image, predict, render, serve, simulate, train, view

COMMANDS = {"render": render, "simulate": simulate, "train": train, "predict": predict, "inspect": inspect_image,
            "evaluate": evaluate, "demo": demo, "view": view, "serve": serve}


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors (no usage block); ``--help`` still shows the usage."""

    def error(self, message: str):  # noqa: D102 - argparse's hook
        print(f"3ddx: error: {self.prog}: {message} (see {self.prog} --help)", file=sys.stderr)
        sys.exit(2)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="3ddx",
                     description="3DDX: bone surfaces from a single standard-geometry radiograph (dual-face depth).")
    parser.add_argument("--version", action="version", version=f"3ddx {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=_Parser)
    for module in COMMANDS.values():
        module.add(sub)
    return parser


def _unknown_options(parser: argparse.ArgumentParser, command: str, extra: list[str]) -> str:
    """One line for options the command does not have, with the closest ones it does."""
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices[command]
    known = [o for a in sub._actions for o in a.option_strings if o.startswith("--")]
    parts = []
    for k, word in enumerate(extra):
        if not word.startswith("-"):
            if k == 0 or not extra[k - 1].startswith("-"):  # not the value of an unknown option
                parts.append(f"unexpected argument {word!r}")
            continue
        close = difflib.get_close_matches(word.split("=")[0], known, n=1, cutoff=0.6)
        parts.append(f"no option {word.split('=')[0]}" + (f" (did you mean {close[0]}?)" if close else ""))
    return f"3ddx {command}: " + "; ".join(parts) + f" (see 3ddx {command} --help)"


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra:
        print(f"3ddx: error: {_unknown_options(parser, args.command, extra)}", file=sys.stderr)
        return 2
    try:
        with warnings.catch_warnings():
            warnings.showwarning = _one_line_warning  # a library's warning: one line, not its source line
            return int(args.func(args) or 0)
    except InputError as e:
        print(f"3ddx: error: {' '.join(str(e).split())}", file=sys.stderr)  # one line, whatever a library said
        return 2
    except KeyboardInterrupt:
        print("3ddx: interrupted", file=sys.stderr)
        return 130
    except Terminated:
        print("3ddx: terminated", file=sys.stderr)
        return 143


def _one_line_warning(message, category, filename, lineno, file=None, line=None) -> None:
    print(f"3ddx: warning: {' '.join(str(message).split())} ({category.__name__})", file=sys.stderr)


class Terminated(BaseException):
    """SIGTERM, raised where the process is (as Ctrl-C raises KeyboardInterrupt), so that every
    ``finally`` runs: a result folder being written is removed, the earlier result stays."""


def _raise_terminated(signum, frame) -> None:
    raise Terminated


def _quiet_exit(signum, frame) -> None:
    """Ctrl-C or SIGTERM after the command has returned (the result is in place): no traceback."""
    print("3ddx: interrupted" if signum == signal.SIGINT else "3ddx: terminated", file=sys.stderr, flush=True)
    os._exit(130 if signum == signal.SIGINT else 143)


def entry() -> None:
    """The ``3ddx`` program: :func:`main` with SIGTERM as an exception (cleaned up like Ctrl-C), and after
    it returns, Ctrl-C or SIGTERM during the interpreter's shut-down exits quietly (130, 143)."""
    signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        code = main()
    finally:
        signal.signal(signal.SIGINT, _quiet_exit)
        signal.signal(signal.SIGTERM, _quiet_exit)
    sys.exit(code)
