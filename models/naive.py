"""Weekly seasonal naive: the forecast is the demand at the same half-hour one week earlier.

Inputs and targets share one level normalisation, so the normalised `last_week` input is already the
normalised forecast: the network is the identity on that input and has no weights to train.
"""

from __future__ import annotations

from dataclasses import dataclass

from runner.models.layers import make_inputs


@dataclass
class Params:
    pass


def build(input_shapes, horizon, params: Params):
    import keras

    if "last_week" not in input_shapes:
        raise ValueError("model=naive needs 'last_week' in data.features")
    inputs = make_inputs(input_shapes)
    out = keras.layers.Identity(name="forecast")(inputs["last_week"])
    return keras.Model(inputs, out, name="naive")
