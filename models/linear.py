"""Linear autoregression: one Dense layer over the window, last week and the calendar (the reference
a network has to beat)."""

from __future__ import annotations

from dataclasses import dataclass

from runner.models.layers import flat_inputs, forecast_head, make_inputs


@dataclass
class Params:
    l2: float = 0.0

    def __post_init__(self):
        if self.l2 < 0:
            raise ValueError(f"model.l2: must be >= 0, got {self.l2}")


def build(input_shapes, horizon, params: Params):
    import keras

    inputs = make_inputs(input_shapes)
    flat = flat_inputs(inputs)
    x = keras.layers.Concatenate()(flat) if len(flat) > 1 else flat[0]
    return keras.Model(inputs, forecast_head(x, inputs, horizon, l2=params.l2), name="linear")
