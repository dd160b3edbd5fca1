"""User-facing errors: each message names the problem and how to fix it."""


class FedemError(Exception):
    """Base class for errors caused by bad input rather than by a bug."""


class ConfigError(FedemError):
    pass


class DataError(FedemError):
    pass


class ChecksumError(DataError):
    pass


class DatasetUnavailableError(DataError):
    pass


class TrainingError(FedemError):
    pass
