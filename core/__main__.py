"""``python -m mmode`` is the same as the ``mmode`` command."""

import sys

from mmode.app.cli import main

sys.exit(main())
