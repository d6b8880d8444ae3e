"""One exception type for mistakes a user can fix; the CLI prints it as one line, never a traceback."""


class UserError(Exception):
    """A problem with the user's input, files or environment, with the fix in the message."""
