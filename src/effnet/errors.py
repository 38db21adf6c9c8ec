"""The one exception family for bad input: the CLI prints these as one line, never as a traceback."""


class EffnetError(Exception):
    """A user-facing error: the message says what was wrong (file, field, value), what was expected, and what to do."""
