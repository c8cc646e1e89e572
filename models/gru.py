"""Recurrent network over the recent window (GRU cells); same shape as the LSTM builder."""

from __future__ import annotations

from runner.models import lstm

Params = lstm.Params


def build(input_shapes, horizon, params: Params):
    return lstm.build(input_shapes, horizon, params, cell="GRU")
