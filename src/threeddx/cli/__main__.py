"""``python -m threeddx.cli``."""
from . import entry

entry()
