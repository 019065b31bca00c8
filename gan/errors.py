"""Exceptions that the command line maps to exit status 2 (usage or input error)."""


class InputError(ValueError):
    """Invalid user input: a bad config value, a bad data source or a bad run folder."""


class DataError(InputError):
    """A dataset source that is missing or does not hold the expected images."""


class RunLockedError(RuntimeError):
    """Another trainer process holds the run's lock."""
