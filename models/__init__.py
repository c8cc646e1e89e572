"""Keras model builders, one per file. Each module has `Params` (a dataclass: the keys its config may
set, with their checks) and `build(input_shapes, horizon, params) -> keras.Model` (uncompiled).
Keras is imported inside `build` so that validating a config never imports TensorFlow."""
