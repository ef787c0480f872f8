"""The one error type users see. The CLI prints its message on one line and exits 1."""


class TmdError(Exception):
    """A problem with the user's input or environment, worded for the user."""
