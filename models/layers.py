"""Inputs and output head shared by the builders.

Every network forecasts the level-normalised next day. When `last_week` is an input, the head adds it
to the network's output (a seasonal-naive skip connection), so a network only learns the correction
to "same time last week" and starts from the naive forecast's accuracy instead of from zero.
"""

from __future__ import annotations


def make_inputs(input_shapes: dict[str, tuple[int, ...]]) -> dict:
    import keras

    return {name: keras.Input(shape=shape, name=name) for name, shape in input_shapes.items()}


def flat_inputs(inputs: dict) -> list:
    import keras

    return [keras.layers.Flatten()(tensor) if len(tensor.shape) > 2 else tensor for tensor in inputs.values()]


def forecast_head(features, inputs: dict, horizon: int, naive_skip: bool = True, l2: float = 0.0):
    import keras

    regularizer = keras.regularizers.L2(l2) if l2 else None
    skip = naive_skip and "last_week" in inputs
    # With the skip, a zero-initialised head makes the untrained network exactly the seasonal naive.
    out = keras.layers.Dense(horizon, kernel_regularizer=regularizer, name="forecast",
                             kernel_initializer="zeros" if skip else "glorot_uniform")(features)
    if skip:
        out = keras.layers.Add(name="plus_last_week")([out, inputs["last_week"]])
    return out


def check_positive(**values) -> None:
    for key, value in values.items():
        if value is None or value <= 0:
            raise ValueError(f"model.{key}: must be > 0, got {value}")


def check_fraction(**values) -> None:
    for key, value in values.items():
        if not 0 <= value < 1:
            raise ValueError(f"model.{key}: must be in [0, 1), got {value}")
