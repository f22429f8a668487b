"""``python -m kubetrade.training`` == ``python -m kubetrade.training.run`` (one process)."""

import sys

from kubetrade.training.run import main

sys.exit(main())
