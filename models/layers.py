"""Inputs and output head shared by the builders.

Every network forecasts the level-normalised next day. The head adds a seasonal-naive forecast to the
network's output (a skip connection), so a network only learns the correction to it and starts from the
naive forecast's accuracy instead of from zero: with `lags` among the inputs, the mean of the re-levelled
past weeks' next day (much the better base); else, with `last_week`, last week's values.
"""

from __future__ import annotations


def make_inputs(input_shapes: dict[str, tuple[int, ...]]) -> dict:
    import keras

    return {name: keras.Input(shape=shape, name=name) for name, shape in input_shapes.items()}


def flat_inputs(inputs: dict) -> list:
    import keras

    return [keras.layers.Flatten()(tensor) if len(tensor.shape) > 2 else tensor for tensor in inputs.values()]


def seasonal_base(inputs: dict, horizon: int):
    """The seasonal-naive forecast the head adds, or None when no input carries one."""
    from keras import ops

    if "lags" in inputs:
        return ops.mean(inputs["lags"][:, :, horizon:], axis=1)
    return inputs.get("last_week")


def forecast_head(features, inputs: dict, horizon: int, naive_skip: bool = True, l2: float = 0.0):
    import keras

    regularizer = keras.regularizers.L2(l2) if l2 else None
    base = seasonal_base(inputs, horizon) if naive_skip else None
    skip = base is not None
    # With the skip, a zero-initialised head makes the untrained network exactly the seasonal naive.
    out = keras.layers.Dense(
        horizon,
        kernel_regularizer=regularizer,
        name="forecast",
        kernel_initializer="zeros" if skip else "glorot_uniform",
    )(features)
    if skip:
        out = keras.layers.Add(name="plus_seasonal_naive")([out, base])
    return out


def check_positive(**values) -> None:
    for key, value in values.items():
        if value is None or value <= 0:
            raise ValueError(f"model.{key}: must be > 0, got {value}")


def check_fraction(**values) -> None:
    for key, value in values.items():
        if not 0 <= value < 1:
            raise ValueError(f"model.{key}: must be in [0, 1), got {value}")
