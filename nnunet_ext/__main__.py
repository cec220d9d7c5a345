"""``python -m nnunet_ext``: the same as ``rankseg-nnunet``."""

import sys

from .cli import main

sys.exit(main())
