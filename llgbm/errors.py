"""The one error type users see: a single line naming the file or key and the problem."""


class LlgbmError(Exception):
    """A user-facing failure. Stage scripts and the CLI print it as one line and exit non-zero."""
