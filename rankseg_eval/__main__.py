"""``python -m rankseg_eval``: the ``rankseg-eval`` command."""

import sys

from .cli import main

sys.exit(main())
