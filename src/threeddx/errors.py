"""Errors that the command line reports as one clear line (exit code 2)."""


class InputError(ValueError):
    """Bad input from the user: a file, a setting, a geometry. The message says
    what is wrong and where; the CLI prints it without a traceback."""
