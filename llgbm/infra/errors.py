"""The one error type users see: a single line naming the file or key and the problem."""


class LlgbmError(Exception):
    """A user-facing failure. Stage scripts and the CLI print it as one line and exit non-zero."""


def first_line(exc: BaseException) -> str:
    """An exception as one line for a user-facing message: its first line, or its type's name."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
