"""Moved to `runner.config.credentials`. This name stays for the logging configs of config folders copied
before the move (`(): runner.credentials.RedactingFilter`): it is that module under its old name.
"""

import sys

from runner.config import credentials as _moved

sys.modules[__name__] = _moved
