import sys

from kubetrade.cli import main

sys.exit(main())
