"""The one exception type that reaches users.

Every check on user input raises :class:`SelfmetaError` with a one-line message; the CLI prints it as
``error: <message>`` and exits with status 2, the Python API lets it propagate (it is a ``ValueError``,
so scikit-learn's conventions hold).
"""


class SelfmetaError(ValueError):
    """Bad input or configuration, explained in one line."""
