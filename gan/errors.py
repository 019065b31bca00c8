"""Exceptions that the command line maps to exit status 2 (usage or input error)."""


class InputError(ValueError):
    """Invalid user input: a bad config value, a bad data source or a bad run folder."""


class DataError(InputError):
    """A dataset source that is missing or does not hold the expected images."""


class RunLockedError(RuntimeError):
    """Another trainer process holds the run's lock."""


class StorageError(RuntimeError):
    """A run file that could not be written: a full disk, a file size limit or a read-only folder."""


def format_value(value: object, max_length: int = 60) -> str:
    """Return ``repr(value)`` for an error message, shortened to about ``max_length`` characters.

    A long value keeps its start and end, and a string is followed by its
    length, so that a pasted 10,000-character value gives a one-line message.
    """
    text = repr(value)
    if len(text) <= max_length:
        return text
    length = f" ({len(value)} characters)" if isinstance(value, str) else ""
    # Both ends, because the end of a path names the file.
    half = max_length // 2
    return f"{text[:half]}...{text[-half:]}{length}"
