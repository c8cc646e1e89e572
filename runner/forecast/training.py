"""Keras side of a job: seeding, thread budget, building, compiling and fitting one network.

TensorFlow is imported here and only here (and by the model builders), after the config is valid.
"""

from __future__ import annotations

import logging
import math
import os
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from runner.contract import PARALLEL_JOBS_ENV

log = logging.getLogger(__name__)


def thread_budget(threads: int | None) -> int:
    """TensorFlow intra-op threads for this job: the configured number, else the cores shared out
    among the jobs that run at the same time, so parallel workers do not oversubscribe the machine."""
    if threads:
        return threads
    cores = os.cpu_count() or 1
    parallel = int(os.environ.get(PARALLEL_JOBS_ENV, "1") or 1)
    if parallel < 1:  # joblib's n_jobs=-1: one job per core
        parallel = cores
    return max(1, cores // parallel)


def import_tensorflow_quietly():
    """Import TensorFlow with the process's stderr closed: TF 2.21 prints absl/oneDNN start-up lines
    from C++ before TF_CPP_MIN_LOG_LEVEL is read, and no setting turns them off. A failed import still
    raises normally."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    from runner import interrupts

    # An import cut halfway breaks every later job of the process, and a process whose TensorFlow import
    # was cut can hang on its way out: a signal or the time limit waits for the import's end.
    with interrupts.no_time_limit(), interrupts.native():
        return _import_tensorflow()


def _import_tensorflow():
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        import keras  # noqa: F401
        import tensorflow as tf
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)
    # "5 out of the last 5 calls ... triggered tf.function retracing": said when one process forecasts with
    # several networks (a combined forecaster's members, a model and its references), where it is expected
    tf.get_logger().setLevel(logging.ERROR)
    return tf


def configure_tensorflow(seed: int, threads: int) -> None:
    tf = import_tensorflow_quietly()
    import keras

    from runner import interrupts

    with interrupts.native():
        _configure(tf, keras, seed, threads)


def _configure(tf, keras, seed: int, threads: int) -> None:
    try:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(min(2, threads))
    except RuntimeError:  # already initialised in this process (a second job in the same worker)
        pass
    random.seed(seed)
    np.random.seed(seed)
    keras.utils.set_random_seed(seed)
    tf.config.experimental.enable_op_determinism()
    tf.get_logger().setLevel(logging.ERROR)


def make_optimizer(name: str, lr: float, clipnorm: float | None, weight_decay: float):
    import keras

    options = {"learning_rate": lr}
    if clipnorm:
        options["clipnorm"] = clipnorm
    if name == "adamw":
        return keras.optimizers.AdamW(weight_decay=weight_decay, **options)
    return {"adam": keras.optimizers.Adam, "sgd": keras.optimizers.SGD, "rmsprop": keras.optimizers.RMSprop}[name](
        **options
    )


def make_loss(name: str, scale: float):
    """The training loss. `mape` is MAPE in MW computed on the normalised values: with targets
    t = (y / level - 1) / scale and predictions p alike, |y_hat - y| / y = scale |p - t| / (1 + scale t)."""
    if name != "mape":
        return {"mse": "mse", "mae": "mae", "huber": "huber"}[name]
    from keras import ops

    def mape(y_true, y_pred):
        return 100.0 * ops.mean(scale * ops.abs(y_pred - y_true) / (1.0 + scale * y_true), axis=-1)

    return mape


@dataclass
class FitResult:
    history: dict[str, list[float]] = field(default_factory=dict)
    best_epoch: int = 0  # 1-based; 0 when the network has nothing to train
    best_val_loss: float = math.nan
    epochs_run: int = 0
    train_seconds: float = 0.0


def signal_checkpoints():
    """A Keras callback that lets a waiting Ctrl-C, SIGTERM or time limit out after each batch and epoch
    (runner.interrupts.native: never from inside TensorFlow's own frames). Its batch hooks also keep
    Keras from running callbacks on a thread pool, where no signal could be raised."""
    import keras

    from runner import interrupts

    class SignalCheckpoints(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            interrupts.checkpoint()

        def on_test_batch_end(self, batch, logs=None):
            interrupts.checkpoint()

        def on_predict_batch_end(self, batch, logs=None):
            interrupts.checkpoint()

        def on_epoch_end(self, epoch, logs=None):
            interrupts.checkpoint()

    return SignalCheckpoints()


class DivergedError(RuntimeError):
    """Training produced a non-finite loss; the job fails rather than report a meaningless model."""


def fit(
    network,
    train,
    val,
    *,
    epochs: int,
    batch_size: int,
    patience: int,
    min_delta: float,
    on_epoch_end: Callable[[int, dict[str, float]], None] | None = None,
) -> FitResult:
    """Fit with early stopping on val_loss and the best weights restored.

    `train` and `val` are (inputs, targets) pairs. `on_epoch_end(epoch, logs)` is called once per
    epoch with 1-based epochs (the tracker logs every metric of an epoch in one call).
    """
    import keras

    from runner import interrupts

    result = FitResult()
    if not network.trainable_weights:  # e.g. the seasonal naive: evaluate as it is
        with interrupts.native():
            loss = float(network.evaluate(*val, verbose=0, batch_size=1024, callbacks=[signal_checkpoints()]))
        result.best_val_loss = loss
        result.history = {"val_loss": [loss]}
        return result

    class EpochHook(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            logs = {k: float(v) for k, v in (logs or {}).items()}
            for key, value in logs.items():
                result.history.setdefault(key, []).append(value)
            if on_epoch_end is not None:
                on_epoch_end(epoch + 1, logs)
            if not all(math.isfinite(v) for v in logs.values()):
                self.model.stop_training = True

    stopper = keras.callbacks.EarlyStopping(
        monitor="val_loss", patience=patience, min_delta=min_delta, restore_best_weights=True
    )
    started = time.perf_counter()
    with interrupts.native():
        network.fit(
            train[0],
            train[1],
            validation_data=val,
            epochs=epochs,
            batch_size=batch_size,
            shuffle=True,
            verbose=0,
            callbacks=[EpochHook(), stopper, signal_checkpoints()],
        )
    result.train_seconds = time.perf_counter() - started
    losses = result.history.get("val_loss", [])
    result.epochs_run = len(losses)
    if not losses or not all(math.isfinite(v) for v in result.history.get("loss", []) + losses):
        raise DivergedError("training diverged: the loss became non-finite (try a smaller lr)")
    result.best_epoch = int(np.argmin(losses)) + 1
    result.best_val_loss = float(np.min(losses))
    return result


def refit(
    network, data, *, epochs: int, batch_size: int, on_epoch_end: Callable[[int, dict[str, float]], None] | None = None
) -> float:
    """Fit a fresh network for a fixed number of epochs (no validation left to stop on); returns seconds."""
    import keras

    from runner import interrupts

    class EpochHook(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            logs = {k: float(v) for k, v in (logs or {}).items()}
            if not all(math.isfinite(v) for v in logs.values()):
                raise DivergedError("the refit on weeks 1-8 diverged: the loss became non-finite")
            if on_epoch_end is not None:
                on_epoch_end(epoch + 1, logs)

    started = time.perf_counter()
    with interrupts.native():
        network.fit(
            data[0],
            data[1],
            epochs=epochs,
            batch_size=batch_size,
            shuffle=True,
            verbose=0,
            callbacks=[EpochHook(), signal_checkpoints()],
        )
    return time.perf_counter() - started
