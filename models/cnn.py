"""1-D convolutions over the recent window, joined with last week and the calendar."""

from __future__ import annotations

from dataclasses import dataclass

from runner.models.layers import check_fraction, check_positive, flat_inputs, forecast_head, make_inputs


@dataclass
class Params:
    filters: int = 32
    kernel_size: int = 5
    layers: int = 2
    pool_size: int = 4
    dropout: float = 0.1
    dense_units: int = 64

    def __post_init__(self):
        check_positive(
            filters=self.filters,
            kernel_size=self.kernel_size,
            layers=self.layers,
            pool_size=self.pool_size,
            dense_units=self.dense_units,
        )
        check_fraction(dropout=self.dropout)


def build(input_shapes, horizon, params: Params):
    import keras

    inputs = make_inputs(input_shapes)
    if "recent" not in inputs:
        raise ValueError("model: a convolutional network needs 'recent' in data.features")
    x = inputs["recent"]
    for i in range(params.layers):
        x = keras.layers.Conv1D(
            params.filters, params.kernel_size, padding="causal", activation="relu", name=f"conv_{i}"
        )(x)
        x = keras.layers.MaxPooling1D(params.pool_size, padding="same")(x)
    x = keras.layers.Flatten()(x)
    others = flat_inputs({k: v for k, v in inputs.items() if k != "recent"})
    x = keras.layers.Concatenate()([x, *others]) if others else x
    x = keras.layers.Dense(params.dense_units, activation="relu")(x)
    x = keras.layers.Dropout(params.dropout)(x)
    return keras.Model(inputs, forecast_head(x, inputs, horizon), name="cnn")
