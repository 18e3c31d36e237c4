"""``python -m timebank.cli``: the same as the ``timebank`` console script."""

import sys

from timebank.cli import main

sys.exit(main())
