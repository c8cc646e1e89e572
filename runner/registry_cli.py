"""Moved to `runner.registry.cli`. This name stays for `python -m runner.registry_cli`, the `runner-registry`
scripts of older installs and imports: it is that module under its old name.
"""

import sys

from runner.registry import cli as _moved

if __name__ == "__main__":
    _moved.main()
sys.modules[__name__] = _moved
