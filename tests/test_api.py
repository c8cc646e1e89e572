"""The Python API as a notebook uses it (`from runner import MLflowManager, ExperimentTracker,
ModelRegistry`), against a temporary SQLite store: the usage examples of the README work as written."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from runner.errors import ExperimentNotFound, ModelNotFound, RunNotFound


def test_the_api_is_importable_from_the_package():
    import runner
    from runner import ExperimentTracker, MLflowManager, ModelRegistry

    assert {"MLflowManager", "ExperimentTracker", "ModelRegistry"} <= set(runner.__all__)
    assert all(callable(c) for c in (ExperimentTracker, MLflowManager, ModelRegistry))


def test_experiments_runs_search_and_best_run(tracking_uri):
    from runner import ExperimentTracker, MLflowManager

    manager = MLflowManager(tracking_uri=tracking_uri)
    experiment_id = manager.setup_experiment("demand-notebook")
    assert manager.setup_experiment("demand-notebook") == experiment_id  # created once
    assert manager.get_experiment("demand-notebook")["experiment_id"] == experiment_id
    assert "demand-notebook" in [e["name"] for e in manager.list_experiments()]

    tracker = ExperimentTracker("demand-notebook", tracking_uri=tracking_uri)
    for lr, rmse in ((0.1, 4.0), (0.01, 2.5), (0.001, 2.9)):
        with tracker:  # starts a run, ends it FINISHED
            tracker.log_params({"lr": lr, "model": {"name": "lstm", "units": 32}})
            for step, value in enumerate((rmse + 2, rmse + 1, rmse)):
                tracker.log_metrics({"rmse": value, "mae": value / 2}, step=step)
            tracker.set_tag("team", "forecasting")

    good = tracker.search_runs("metrics.rmse < 3.0", order_by=["metrics.rmse ASC"])
    assert [r["metrics"]["rmse"] for r in good] == [2.5, 2.9]
    assert good[0]["params"] == good[0]["parameters"] == {"lr": "0.01", "model.name": "lstm", "model.units": "32"}
    assert good[0]["status"] == "FINISHED" and good[0]["tags"]["team"] == "forecasting"
    history = tracker.client.get_metric_history(good[0]["run_id"], "rmse")
    assert [(m.step, m.value) for m in history] == [(0, 4.5), (1, 3.5), (2, 2.5)]

    best = tracker.get_best_run("rmse")
    assert best["run_id"] == good[0]["run_id"]
    assert tracker.get_best_run("rmse", ascending=False)["metrics"]["rmse"] == 4.0
    assert tracker.get_best_run("no_such_metric") is None

    with pytest.raises(ValueError), tracker:
        raise ValueError("diverged")
    failed = tracker.search_runs("attributes.status = 'FAILED'")
    assert len(failed) == 1

    manager.delete_experiment("demand-notebook")
    with pytest.raises(ExperimentNotFound):
        manager.get_experiment("no-such-experiment")
    with pytest.raises(RunNotFound):
        tracker.get_run("0" * 32)


@pytest.mark.slow
def test_keras_model_logged_registered_staged_and_traced(tracking_uri, recwarn):
    """Log and register a Keras model, list versions, transition to Production, read the lineage,
    load it back by stage and by alias."""
    import keras

    from runner import ExperimentTracker, ModelRegistry

    keras.utils.set_random_seed(0)
    network = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
    network.compile(optimizer="sgd", loss="mse")
    inputs = np.arange(12, dtype="float32").reshape(4, 3)

    tracker = ExperimentTracker("demand-notebook", tracking_uri=tracking_uri)
    with tracker:
        tracker.log_params({"lr": 0.01, "units": 1})
        tracker.log_metrics({"rmse": 2.0})
        tracker.log_model(network, artifact_path="model", registered_model_name="demand-keras")
        run_id = tracker.run_id
    assert not [w for w in recwarn if "artifact_path" in str(w.message)]  # MLflow 3 calls it `name`

    registry = ModelRegistry(tracking_uri=tracking_uri)
    versions = registry.get_model_versions("demand-keras")
    assert [(v["version"], v["run_id"], v["stage"]) for v in versions] == [("1", run_id, "None")]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the stage deprecation warning must not reach the user
        registry.transition_model("demand-keras", "Production")
    assert [v["version"] for v in registry.get_latest_versions("demand-keras", stages=["Production"])] == ["1"]
    registry.set_alias("demand-keras", "champion", "1", reason="first model")

    lineage = registry.get_model_lineage("demand-keras", "1")
    assert lineage["run_id"] == run_id
    assert lineage["params"] == {"lr": "0.01", "units": "1"} and lineage["metrics"] == {"rmse": 2.0}
    assert lineage["config"] is None and lineage["parent_run_id"] is None  # not a runner job: no config
    assert [(e["alias"], e["to_version"]) for e in lineage["events"]] == [("stage:Production", "1"), ("champion", "1")]

    expected = network.predict(inputs, verbose=0)
    for model in (registry.get_model("demand-keras", stage="Production"), registry.get_model("demand-keras@champion")):
        assert np.allclose(np.asarray(model.predict(inputs)), expected, atol=1e-5)

    registry.set_model_version_tag("demand-keras", "1", "reviewed_by", "alice")
    assert registry.get_model_version("demand-keras", "1")["tags"]["reviewed_by"] == "alice"
    registry.delete_model_version("demand-keras", "1")
    assert registry.get_model_versions("demand-keras") == []
    with pytest.raises(ModelNotFound):
        registry.get_model("not-registered")


def test_a_run_starts_although_the_notebook_chose_another_experiment(tracking_uri):
    """mlflow.set_experiment(other) first, as a notebook might: the tracker's run still starts and ends."""
    import mlflow

    from runner import ExperimentTracker

    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_experiment("someone-elses")
    tracker = ExperimentTracker("demand-notebook", tracking_uri=tracking_uri)
    with tracker:
        run_id = tracker.run_id
        tracker.log_metrics({"rmse": 2.5}, step=1)
    [run] = tracker.search_runs()
    assert (run["run_id"], run["status"], run["metrics"]["rmse"]) == (run_id, "FINISHED", 2.5)
