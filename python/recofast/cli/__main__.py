"""``python -m recofast.cli COMMAND ...``: the ``recofast`` command without its script."""

import sys

from recofast.cli import main

sys.exit(main())
