"""``python -m threeddx.cli``."""
import sys

from . import main

sys.exit(main())
