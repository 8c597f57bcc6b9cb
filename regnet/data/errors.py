"""The one error type of ``regnet.data``.

It subclasses ``ValueError`` so the CLI's existing ``except ValueError`` turns it into one
sentence on stderr; every message names the problem and the fix, because the reader is a
user looking at a dashboard or a terminal, not at a traceback.
"""


class DataError(ValueError):
    """A data set cannot be found, read or configured; the message says what to do about it."""
