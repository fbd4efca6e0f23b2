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
saves and stops. Several processes must stop at the same step, or the ones
still stepping hang in a collective: every step each process contributes its
flag to a one-number all-reduce (max) over the mesh, dispatched without
waiting, and all stop at the step whose result, read `LAG` steps later, says
any process was asked to. JAX's own preemption service
(`multihost_utils.reached_preemption_sync_point`) was measured to miss a
SIGTERM that arrives before its first call whenever a run resumes from a
step > 0 (it then agrees on step 1, which never comes), and orbax calls it
from a background thread with older steps; so it is switched off here and
SIGTERM stays with these handlers.
"""

import contextlib
import functools
import signal
import threading
from typing import Optional

import numpy as np
from absl import logging

EXIT_PREEMPTED = 75
EXIT_ABORTED = 130
LAG = 2   # Steps between an agreement's dispatch and its (blocking) read.
_NAMES = {signal.SIGTERM: 'SIGTERM', signal.SIGINT: 'Ctrl-C (SIGINT)'}


class Preemption:
  """Signal handlers and the per-step "stop now?" decision of one process."""

  def __init__(self):
    self.requested: Optional[str] = None   # What was received, first.
    self.multiprocess = False
    self._previous = {}
    self._interrupts = 0
    self._pending = []        # Dispatched agreements, oldest first.
    self._agree = None
    self._immediate = False   # No steps to finish: stop where we are.

  # -- Handlers ---------------------------------------------------------------

  def install(self) -> bool:
    """Installs the SIGTERM and SIGINT handlers (main thread only; once).
    Returns whether this call installed them."""
    if (self._previous or
        threading.current_thread() is not threading.main_thread()):
      return False
    # Only our handlers record requests, so none can predate them.
    self.requested, self._interrupts = None, 0
    for sig in (signal.SIGTERM, signal.SIGINT):
      self._previous[sig] = signal.signal(sig, self._handle)
    return True

  def uninstall(self) -> None:
    """Restores the handlers found by `install`."""
    for sig, previous in self._previous.items():
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
    if self._immediate:
      self._stop_now(name)
    if self.requested is None:
      self.requested = name
      logging.warning(
          '%s received: saving at the next step boundary, then exiting with '
          'code %d (rerun the same command to resume).%s', name,
          EXIT_PREEMPTED,
          ' Ctrl-C again aborts at once.' if signum == signal.SIGINT else '')
    else:
      logging.warning('%s received again; already stopping.', name)

  @staticmethod
  def _stop_now(name):
    logging.warning('%s received during an evaluation-only run: nothing to '
                    'save; exiting with code %d.', name, EXIT_PREEMPTED)
    raise SystemExit(EXIT_PREEMPTED)

  @contextlib.contextmanager
  def immediate(self):
    """Around work with nothing to save (mode=eval): a signal stops it at
    once (SystemExit 75) instead of waiting for a step boundary."""
    if self.requested is not None:
      self._stop_now(self.requested)
    self._immediate = True
    try:
      yield
    finally:
      self._immediate = False

  # -- The training loop's questions ----------------------------------------

  @contextlib.contextmanager
  def watch(self):
    """Around a training loop: from here the process count is known."""
    import jax  # pylint: disable=g-import-not-at-top
    self.multiprocess = jax.process_count() > 1
    self._pending = []
    if self.multiprocess and self._previous:
      # Take SIGTERM back in case jax.distributed started its preemption
      # notifier (a library caller), which replaces Python's handler.
      signal.signal(signal.SIGTERM, self._handle)
    yield self

  def _dispatch_agreement(self):
    """max over processes of "was this one asked to stop?", not waited for."""
    import jax  # pylint: disable=g-import-not-at-top
    from jax.sharding import NamedSharding, PartitionSpec as P  # pylint: disable=g-import-not-at-top
    from simclr_jax import parallel  # pylint: disable=g-import-not-at-top
    if self._agree is None:
      mesh = parallel.make_mesh()
      self._agree = (NamedSharding(mesh, P(parallel.DATA_AXIS)), jax.jit(
          lambda x: x.max(), out_shardings=NamedSharding(mesh, P())))
    sharding, agree = self._agree
    local = np.full((jax.local_device_count(),), self.requested is not None,
                    np.int32)
    return agree(jax.make_array_from_process_local_data(sharding, local))

  @staticmethod
  def _read(agreement) -> bool:
    return bool(np.asarray(agreement.addressable_data(0)))

  def _agreed(self, step, stop) -> bool:
    if stop:
      import jax  # pylint: disable=g-import-not-at-top
      logging.warning('Stop requested (%s on this process): all %d processes '
                      'stop after step %d.', self.requested or 'not',
                      jax.process_count(), step)
      self.requested = self.requested or 'another process'
    return stop

  def should_stop(self, step: int) -> bool:
    """Whether to save `step` and stop. With several processes, called once
    per step on every process, so that they all read the same agreement."""
    if not self.multiprocess:
      return self.requested is not None
    self._pending.append(self._dispatch_agreement())
    if len(self._pending) <= LAG:
      return False
    return self._agreed(step, self._read(self._pending.pop(0)))

  def stop_before_start(self, start_step: int, directory) -> bool:
    """A request during start-up: stop before any step (nothing new to save)."""
    if self.multiprocess:
      # The first collective over the whole mesh: processes that took
      # unequal time to build and restore meet first (parallel.barrier).
      from simclr_jax import parallel  # pylint: disable=g-import-not-at-top
      parallel.barrier('before_first_step')
      stopping = self._agreed(start_step,
                              self._read(self._dispatch_agreement()))
    else:
      stopping = self.requested is not None
    if not stopping:
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
  that a signal while flags are parsed or JAX starts is not lost), and keeps
  jax.distributed from handing SIGTERM to its preemption service."""
  import jax  # pylint: disable=g-import-not-at-top
  jax.config.update('jax_enable_preemption_service', False)
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
