"""One exception type for problems a user can fix: the commands print its message, not a
traceback. The training package raises the same type."""


class SeqNetError(Exception):
    """Bad input, bad config or a missing file, explained in one line."""
