"""User-facing errors: one line, `error: WHAT (hint: HOW TO FIX)`, exit code 2, no traceback."""


class UserError(Exception):
    """A problem the user can fix (bad recipe, bad data, bad flag). Printed as one line."""

    exit_code = 2

    def __init__(self, what: str, hint: str = ""):
        super().__init__(what)
        self.what = what
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.what} (hint: {self.hint})" if self.hint else self.what


class CheckFailed(UserError):
    """A run finished but a check it exists to make failed (results are written). Exit 1, one line."""

    exit_code = 1
