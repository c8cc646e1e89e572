"""`python -m runner.registry ...`: the registry command line (runner-registry)."""

import sys

from runner.registry.cli import main

sys.exit(main())
