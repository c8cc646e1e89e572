"""Fully connected network over all inputs flattened."""

from __future__ import annotations

from dataclasses import dataclass, field

from runner.models.layers import check_fraction, check_positive, flat_inputs, forecast_head, make_inputs


@dataclass
class Params:
    hidden: list[int] = field(default_factory=lambda: [128, 64])
    dropout: float = 0.1
    l2: float = 0.0

    def __post_init__(self):
        if not self.hidden:
            raise ValueError("model.hidden: must list at least one layer size")
        check_positive(**{f"hidden.{i}": units for i, units in enumerate(self.hidden)})
        check_fraction(dropout=self.dropout)
        if self.l2 < 0:
            raise ValueError(f"model.l2: must be >= 0, got {self.l2}")


def build(input_shapes, horizon, params: Params):
    import keras

    inputs = make_inputs(input_shapes)
    flat = flat_inputs(inputs)
    x = keras.layers.Concatenate()(flat) if len(flat) > 1 else flat[0]
    for units in params.hidden:
        x = keras.layers.Dense(units, activation="relu", kernel_regularizer=keras.regularizers.L2(params.l2))(x)
        x = keras.layers.Dropout(params.dropout)(x)
    return keras.Model(inputs, forecast_head(x, inputs, horizon, l2=params.l2), name="mlp")
