"""User mistakes, told apart from bugs.

A `UserError` names what the user asked for that cannot work (a config field,
a path, a dataset, a checkpoint, an image) in one line, with an optional hint.
The command line prints it without a traceback and exits with `EXIT_USAGE`;
any other exception is a bug and keeps its traceback. It subclasses ValueError
so that library callers can catch it as one.
"""

from typing import Optional

EXIT_USAGE = 2


class UserError(ValueError):

  def __init__(self, message: str, hint: Optional[str] = None):
    super().__init__(message)
    self.hint = hint
