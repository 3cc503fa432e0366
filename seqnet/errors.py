"""One exception type for problems a user can fix: the CLI prints its message, not a traceback."""


class SeqNetError(Exception):
    """Bad input, bad config or a missing file, explained in one line."""
