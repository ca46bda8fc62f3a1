"""``python -m posed.cli``: the ``posed`` command."""

import sys

from posed.cli import main

sys.exit(main())
