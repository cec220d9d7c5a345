"""Deprecated: ``python -m rankseg_plugins.eval`` is ``python -m rankseg_eval`` (the ``rankseg-eval`` command)."""

import sys
import warnings

warnings.warn("python -m rankseg_plugins.eval is deprecated: use rankseg-eval or python -m rankseg_eval",
              DeprecationWarning, stacklevel=1)

from rankseg_eval.cli import main  # noqa: E402

sys.exit(main())
