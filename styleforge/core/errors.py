"""The one base class for problems a user can fix: reported as a clear message, exit code 2."""


class UserError(Exception):
    """Bad params, a missing or broken checkpoint, unusable weights, a busy workspace, a diverged
    run: the CLI prints the message (no traceback) and exits 2, which the flows do not retry."""
