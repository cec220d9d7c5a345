"""``python -m rankseg_plugins.eval``: same as the ``rankseg-eval`` command."""

import sys

from .cli import main

sys.exit(main())
