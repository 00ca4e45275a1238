"""``python -m app``: see ``app.cli``."""
import sys

from .cli import main

sys.exit(main())
