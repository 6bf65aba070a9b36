"""``python -m deltarnn.cli``: the same as the ``deltarnn`` command."""

import sys

from deltarnn.cli import main

sys.exit(main())
