"""A declarative experiment runner: Hydra configs in, tracked MLflow runs and a governed registry out.

    from runner import MLflowManager, ExperimentTracker, ModelRegistry

The API classes are imported on first use, so `import runner` (and `python -m runner --help`)
stays free of MLflow and TensorFlow.
"""

__version__ = "0.1.0"

_LAZY = {
    "MLflowManager": "runner.tracking",
    "ExperimentTracker": "runner.tracking",
    "ModelRegistry": "runner.registry",
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'runner' has no attribute {name!r}")
