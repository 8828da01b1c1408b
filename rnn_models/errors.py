"""The one exception type for mistakes a user can fix (bad input, bad option)."""


class UserError(Exception):
    """Raised for bad input or options; the CLI prints it as one paragraph, no traceback."""
