"""What the console shows: C++ libraries' own messages kept off it where
this package reports the outcome itself."""

import contextlib
import os
import sys


@contextlib.contextmanager
def stderr_silenced():
  """Closes file descriptor 2 (not just sys.stderr) for the block: TF's C++
  code (start-up notices, libjpeg's complaints about a corrupt file) writes
  there directly. Python exceptions still propagate after the block."""
  sys.stderr.flush()
  saved, devnull = os.dup(2), os.open(os.devnull, os.O_WRONLY)
  os.dup2(devnull, 2)
  try:
    yield
  finally:
    os.dup2(saved, 2)
    os.close(saved)
    os.close(devnull)
