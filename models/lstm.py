"""Recurrent network over the recent window (LSTM cells), joined with last week and the calendar."""

from __future__ import annotations

from dataclasses import dataclass

from runner.models.layers import check_fraction, check_positive, flat_inputs, forecast_head, make_inputs


@dataclass
class Params:
    units: int = 64
    layers: int = 1
    dropout: float = 0.1
    dense_units: int = 64

    def __post_init__(self):
        check_positive(units=self.units, layers=self.layers, dense_units=self.dense_units)
        check_fraction(dropout=self.dropout)


def build(input_shapes, horizon, params: Params, cell: str = "LSTM"):
    import keras

    inputs = make_inputs(input_shapes)
    if "recent" not in inputs:
        raise ValueError("model: a recurrent network needs 'recent' in data.features")
    layer = getattr(keras.layers, cell)
    x = inputs["recent"]
    for i in range(params.layers):
        x = layer(params.units, return_sequences=i < params.layers - 1, name=f"{cell.lower()}_{i}")(x)
    others = flat_inputs({k: v for k, v in inputs.items() if k != "recent"})
    x = keras.layers.Concatenate()([x, *others]) if others else x
    x = keras.layers.Dense(params.dense_units, activation="relu")(x)
    x = keras.layers.Dropout(params.dropout)(x)
    return keras.Model(inputs, forecast_head(x, inputs, horizon), name=cell.lower())
