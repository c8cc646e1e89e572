"""Moved to `runner.forecast.evaluate`. This name stays for `python -m runner.evaluate` (the README's scoring
command) and imports: it is that module under its old name.
"""

import sys

from runner.forecast import evaluate as _moved

if __name__ == "__main__":
    sys.exit(_moved.main())
sys.modules[__name__] = _moved
