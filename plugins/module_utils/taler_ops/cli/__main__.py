"""``python -m taler_ops.cli``: the sync service and the tests start the CLI this way."""

import sys

from .main import main

sys.exit(main())
