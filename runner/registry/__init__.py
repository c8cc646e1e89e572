"""The registry side: versions, aliases and the promotion policy.

`core` (`ModelRegistry`: versions, aliases, stages, their history), `promotion` (a sweep's decision under
the YAML policy), `locks` (one promotion at a time per model), `lineage` and `reproduce` (where a version
came from, and running it again), `stale_runs` and `prune` (housekeeping), `cli` (`runner-registry`, also
`python -m runner.registry`), `units` (how metrics print).

`ModelRegistry` and the other public names of `core` are imported on first use, so the command line and
the light modules stay free of MLflow until they need it.
"""

_CORE = ("ModelRegistry", "RegistryChanges", "STAGE_PREFIX", "default_actor", "global_mlflow_uris")

__all__ = list(_CORE)


def __getattr__(name):
    if name in _CORE:
        from runner.registry import core

        return getattr(core, name)
    raise AttributeError(f"module 'runner.registry' has no attribute {name!r}")
