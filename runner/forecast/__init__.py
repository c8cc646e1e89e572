"""The forecasting side: the data series, the features and the forecaster, training, scoring, plots and
the logged model.

`forecaster` is self-contained (MLflow stores the file with every model and runs it without this package):
it imports nothing from `runner`.
"""
