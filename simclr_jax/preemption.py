"""Interruptions: SIGTERM and Ctrl-C become a checkpoint and a documented exit code.

Exit codes of `python -m simclr_jax.main` (and `simclr-jax`):
  0    finished (or nothing to do).
  75   EXIT_PREEMPTED: stopped by SIGTERM or Ctrl-C; the newest reachable
       step is saved (or, if no step ran, the last checkpoint is kept). Rerun
       the same command to resume. 75 is sysexits' EX_TEMPFAIL ("temporary
       failure, retry"), which schedulers can requeue on.
  130  EXIT_ABORTED: a second Ctrl-C; stopped at once, checkpoints already
       written are kept.
  other  an error (a traceback or a one-line message says which).

One process: Python handlers set a flag; the loop checks it after every step,
saves and stops. Several processes: they must stop at the same step or the
survivors hang in a collective, so the agreement is JAX's preemption service
(started by `jax.distributed.initialize`, which owns SIGTERM from then on):
`multihost_utils.reached_preemption_sync_point` is called once per step on
every process. Ctrl-C on any process is turned into a SIGTERM to itself so
that the service hears of it too.
"""

import contextlib
import functools
import os
import signal
import threading
from typing import Optional

from absl import logging

EXIT_PREEMPTED = 75
EXIT_ABORTED = 130
_NAMES = {signal.SIGTERM: 'SIGTERM', signal.SIGINT: 'Ctrl-C (SIGINT)'}


class Preemption:
  """Signal handlers and the per-step "stop now?" decision of one process."""

  def __init__(self):
    self.requested: Optional[str] = None   # What was received, first.
    self.multiprocess = False
    self._previous = {}
    self._interrupts = 0
    self._calls = 0           # Sync-point counter: same sequence everywhere.
    self._forwarded = False

  # -- Handlers ---------------------------------------------------------------

  def install(self) -> bool:
    """Installs the SIGTERM and SIGINT handlers (main thread only; once).
    Returns whether this call installed them."""
    if (self._previous or
        threading.current_thread() is not threading.main_thread()):
      return False
    # Only our handlers record requests, so none can predate them.
    self.requested, self._interrupts, self._forwarded = None, 0, False
    for sig in (signal.SIGTERM, signal.SIGINT):
      self._previous[sig] = signal.signal(sig, self._handle)
    return True

  def uninstall(self) -> None:
    """Restores the handlers found by `install` (not SIGTERM's once JAX's
    preemption service owns it: restoring ours would silence the service)."""
    for sig, previous in self._previous.items():
      if sig == signal.SIGTERM and self.multiprocess:
        continue
      signal.signal(sig, previous if previous is not None else signal.SIG_DFL)
    self._previous = {}

  def _handle(self, signum, frame):
    del frame
    name = _NAMES.get(signum, str(signum))
    if signum == signal.SIGINT:
      self._interrupts += 1
      if self._interrupts > 1:
        logging.warning('Second Ctrl-C: aborting now (exit code %d); '
                        'checkpoints already written are kept.', EXIT_ABORTED)
        raise KeyboardInterrupt
    if self.requested is None:
      self.requested = name
      logging.warning(
          '%s received: saving at the next step boundary, then exiting with '
          'code %d (rerun the same command to resume).%s', name,
          EXIT_PREEMPTED,
          ' Ctrl-C again aborts at once.' if signum == signal.SIGINT else '')
    else:
      logging.warning('%s received again; already stopping.', name)
    self._forward()

  def _forward(self):
    """With several processes, tells JAX's preemption service (listening for
    SIGTERM) about a request it did not see, once."""
    if self.multiprocess and self.requested and not self._forwarded:
      self._forwarded = True
      os.kill(os.getpid(), signal.SIGTERM)

  # -- The training loop's questions ----------------------------------------

  @contextlib.contextmanager
  def watch(self):
    """Around a training loop: from here the process count is known."""
    import jax  # pylint: disable=g-import-not-at-top
    self.multiprocess = jax.process_count() > 1
    self._calls = 0
    self._forward()   # A request that came before jax.distributed started.
    yield self

  def should_stop(self, step: int) -> bool:
    """Whether to save `step` and stop. Called exactly once per step (and
    once before the first one) on every process, so the counters match."""
    if not self.multiprocess:
      return self.requested is not None
    from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
    call, self._calls = self._calls, self._calls + 1
    # The service's counter must start at 0 in each process: a notice that
    # arrives before the first call is agreed on at call 1 (measured), and
    # would never be with counters that start at a resumed step.
    try:
      stop = bool(multihost_utils.reached_preemption_sync_point(call))
    except RuntimeError:  # The service is not running (disabled in jax).
      return False
    if stop:
      import jax  # pylint: disable=g-import-not-at-top
      self.requested = self.requested or 'a preemption notice'
      logging.warning('Preemption notice (SIGTERM or Ctrl-C on at least one '
                      'process): all %d processes stop after step %d.',
                      jax.process_count(), step)
    return stop

  def stop_before_start(self, start_step: int, directory) -> bool:
    """A request during start-up: stop before any step (nothing new to save)."""
    if not self.should_stop(start_step):
      return False
    kept = (f'the checkpoint at step {start_step} in {directory} is kept'
            if start_step else 'no checkpoint was written yet')
    logging.warning('Stopped during start-up (%s), before the first step: '
                    'nothing new to save; %s. Exiting with code %d; rerun the '
                    'same command to resume.', self.requested, kept,
                    EXIT_PREEMPTED)
    return True

  def log_saved(self, step: int, directory) -> None:
    logging.warning('Preemption requested: saved a checkpoint at step %d in '
                    '%s; exiting with code %d. Rerun the same command to '
                    'resume.', step, directory, EXIT_PREEMPTED)

  def stop_before_final_eval(self, step: int) -> bool:
    """A request after the last step was saved (one process: the others
    cannot be asked without a collective): the final evaluation is skipped
    and left to the rerun."""
    if self.multiprocess or self.requested is None:
      return False
    logging.warning('%s after the last step (%d, saved): final evaluation '
                    'skipped; exiting with code %d. Rerun the same command '
                    'to evaluate.', self.requested, step, EXIT_PREEMPTED)
    return True


_CURRENT = Preemption()


def current() -> Preemption:
  return _CURRENT


def install() -> bool:
  """Installs the handlers now (the command line does so first thing, so
  that a signal while flags are parsed or JAX starts is not lost)."""
  return _CURRENT.install()


def handles_signals(fn):
  """Decorator: SIGTERM/SIGINT handled (not fatal) while `fn` runs; handlers
  installed by it are removed afterwards (a notebook's Ctrl-C works again)."""
  @functools.wraps(fn)
  def wrapper(*args, **kwargs):
    installed = _CURRENT.install()
    try:
      return fn(*args, **kwargs)
    finally:
      if installed:
        _CURRENT.uninstall()
  return wrapper
