"""Errors that the command line reports as one clear line (exit code 2), and the checks that raise them."""
from __future__ import annotations

import math
from typing import Any, Iterable


class InputError(ValueError):
    """Bad input from the user: a file, a setting, a geometry. The message says
    what is wrong and where; the CLI prints it without a traceback."""


def check_number(value: Any, lo: float, hi: float, where: object, key: str, whole: bool = False,
                 open_ends: bool = False) -> float:
    """``value`` if it is a finite number (a whole one with ``whole``) within [lo, hi] ((lo, hi) with
    ``open_ends``), else one InputError naming ``where`` and ``key``. Booleans and strings are not numbers."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    if ok:
        try:
            ok = math.isfinite(value) and (not whole or float(value).is_integer())
        except OverflowError:  # an integer too large for a float
            ok = False
    if ok:
        ok = lo < value < hi if open_ends else lo <= value <= hi
    if not ok:
        span = f"({lo:g}, {hi:g})" if open_ends else f"{lo:g}-{hi:g}"
        kind = "a whole number" if whole else "a number"
        raise InputError(f"{where}: {key} must be {kind} in {span}, got {str(value)[:40]!r}")
    return value


def look_up_option(value: Any, options: Iterable[str], what: str) -> str:
    """``value`` if it is one of ``options``, else one InputError naming ``what``, the nearest option ("did you
    mean") and every choice. One home for every string option (meshers, losses, chains, ...)."""
    choices = list(options)
    if isinstance(value, str) and value in choices:
        return value
    import difflib

    near = difflib.get_close_matches(str(value), choices, n=1)
    hint = f"; did you mean {near[0]!r}?" if near else ""
    raise InputError(f"unknown {what} {str(value)[:40]!r}{hint} (choose from {', '.join(choices)})")
