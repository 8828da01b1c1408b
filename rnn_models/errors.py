"""The one exception type for mistakes a user can fix (bad input, bad option)."""


class UserError(Exception):
    """Raised for bad input or options; the CLI prints it as one paragraph, no traceback."""


def reason(e: BaseException) -> str:
    """A library's error message on one line, to quote inside a `UserError`'s paragraph (pyarrow quotes the
    offending CSV row, torch explains over several paragraphs)."""
    return " ".join(str(e).split())
