"""Errors the user can fix, and how they are written: one line (utils/core/cli.py's run_cli turns a
:class:`UserError` into that line on stderr and exit code 2)."""


class UserError(Exception):
    """Bad input the user can fix; reported as one line on stderr with exit code 2."""


def one_line(text) -> str:
    """``text`` (a path, an exception) for a one-line message: line breaks and other unprintable
    characters escaped."""
    text = str(text)
    return text if text.isprintable() else "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)
