"""The package's own exceptions: callers catch these instead of crashing later on a None."""


class RunnerError(Exception):
    """Base class; str() is a one-line message meant for a person."""


class TrackingUnavailable(RunnerError):
    """The tracking store or server cannot be reached, or refuses our credentials."""


class ExperimentNotFound(RunnerError):
    pass


class RunNotFound(RunnerError):
    pass


class ModelNotFound(RunnerError):
    pass


class VersionNotFound(RunnerError):
    pass


class AliasNotFound(RunnerError):
    pass


class PolicyError(RunnerError):
    """A promotion policy cannot be applied (e.g. a champion scored on other data and `refuse`)."""
