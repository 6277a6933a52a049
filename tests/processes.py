"""Helpers for tests that signal a ``3ddx`` child process."""
import signal


def terminal_signals() -> None:
    """``preexec_fn`` for a child that a test interrupts: SIGINT and SIGQUIT back to their defaults, as a command
    started from a terminal has them. A test suite started in the background of a script (``pytest &``,
    ``nohup``) runs with them ignored, every child inherits that, and Python then installs no Ctrl-C handler:
    the child would run to its end (exit 0) whatever the test sends."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGQUIT, signal.SIG_DFL)
