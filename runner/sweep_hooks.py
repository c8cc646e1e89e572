"""Moved to `runner.sweep`. This name stays for the `hydra.callbacks` of config folders copied before the move
(`_target_: runner.sweep_hooks.SweepTracking`): it is that module under its old name.
"""

import sys

from runner import sweep as _moved

sys.modules[__name__] = _moved
