"""Data parallelism: one device mesh, per-device programs, global batches.

The per-device programs are written with pmap semantics (named-axis
collectives over `DATA_AXIS`) and run with `jax.shard_map` under `jax.jit` on a
1-D mesh of every device of every host. Train state is replicated; batches are
sharded on their leading axis.
"""

import os
from typing import Any, Callable, Iterable, Iterator, Optional

import jax
import numpy as np
from absl import logging
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from simclr_jax.errors import UserError

DATA_AXIS = 'batch'


def initialize_distributed(coordinator_address: Optional[str] = None,
                           num_processes: Optional[int] = None,
                           process_id: Optional[int] = None,
                           initialization_timeout: int = 300,
                           heartbeat_timeout: int = 100) -> None:
  """Starts JAX's multi-controller runtime when there is more than one process.

  Explicit arguments (or SIMCLR_COORDINATOR_ADDRESS / SIMCLR_NUM_PROCESSES /
  SIMCLR_PROCESS_ID) win; otherwise JAX auto-detects Cloud TPU pods and SLURM.
  Must run before any other JAX call. A single process is a no-op. A process
  that dies makes the others fail after `heartbeat_timeout` seconds instead of
  hanging.
  """
  env = os.environ
  coordinator_address = coordinator_address or env.get('SIMCLR_COORDINATOR_ADDRESS')
  if num_processes is None and 'SIMCLR_NUM_PROCESSES' in env:
    num_processes = int(env['SIMCLR_NUM_PROCESSES'])
  if process_id is None and 'SIMCLR_PROCESS_ID' in env:
    process_id = int(env['SIMCLR_PROCESS_ID'])
  explicit = coordinator_address is not None and (num_processes or 1) > 1
  auto = any(k in env for k in ('SLURM_JOB_ID', 'TPU_WORKER_HOSTNAMES',
                                'CLOUD_TPU_TASK_ID', 'MEGASCALE_COORDINATOR_ADDRESS'))
  if explicit:
    # CPU devices need a collectives backend across processes (harmless on
    # accelerators, whose collectives are their own).
    jax.config.update('jax_cpu_collectives_implementation', 'gloo')
    jax.distributed.initialize(coordinator_address=coordinator_address,
                               num_processes=num_processes,
                               process_id=process_id,
                               initialization_timeout=initialization_timeout,
                               heartbeat_timeout_seconds=heartbeat_timeout)
  elif auto and int(env.get('SLURM_NTASKS', '2')) > 1:
    jax.distributed.initialize(initialization_timeout=initialization_timeout,
                               heartbeat_timeout_seconds=heartbeat_timeout)
  if (jax.process_count() > 1 and jax.devices()[0].platform == 'cpu'
      and jax.local_device_count() > 1):
    # XLA:CPU's gloo collectives deadlock within tens of steps when a process
    # holds several devices (docs/architecture.md, "Several processes").
    raise UserError(
        f'{jax.local_device_count()} CPU devices in each of '
        f'{jax.process_count()} processes: CPU runs over several processes '
        'need one device per process. Drop '
        '--xla_force_host_platform_device_count from XLA_FLAGS (or set it to 1).')
  if jax.process_count() > 1:
    logging.info('JAX process %d of %d; %d local devices, %d global devices (%s).',
                 jax.process_index(), jax.process_count(),
                 jax.local_device_count(), jax.device_count(),
                 jax.devices()[0].platform)


def make_mesh(devices=None) -> Mesh:
  """A 1-D mesh over all devices (of all processes) on the data axis."""
  devices = jax.devices() if devices is None else list(devices)
  return Mesh(np.asarray(devices), (DATA_AXIS,))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def batch_sharded(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P(DATA_AXIS))


def shard_step(fn: Callable, mesh: Mesh, *, batch_argnums: Iterable[int],
               num_args: int, donate_argnums=(), out_batch: bool = False):
  """jit(shard_map(fn)): replicated args, batch-sharded `batch_argnums`.

  Outputs are replicated (fn must make them so with collectives), or sharded
  on the batch axis when `out_batch`. `check_vma=False` keeps pmap semantics:
  the gradient of a per-device loss is that device's own contribution, and
  the caller averages it with `pmean`.
  """
  batch_argnums = set(batch_argnums)
  in_specs = tuple(P(DATA_AXIS) if i in batch_argnums else P()
                   for i in range(num_args))
  mapped = jax.shard_map(fn, mesh=mesh, in_specs=in_specs,
                         out_specs=P(DATA_AXIS) if out_batch else P(),
                         check_vma=False)
  return CompiledOnce(jax.jit(mapped, donate_argnums=donate_argnums),
                      getattr(fn, '__name__', 'step'))


class CompiledOnce:
  """A jitted step compiled ahead of time on its first call, then reused.

  Compiling explicitly means (1) the step compiles exactly once: a later call
  with other shapes is an error, never a silent recompilation; (2) with
  several processes, all of them wait at a barrier after compiling, so the
  first collective does not time out on a host that compiled more slowly.
  """

  def __init__(self, jitted, name: str):
    self.jitted = jitted
    self.name = name
    self.compiled = None
    self.lower = jitted.lower

  def __call__(self, *args):
    if self.compiled is None:
      self.compiled = self.jitted.lower(*args).compile()
      barrier(f'compiled_{self.name}')
    return self.compiled(*args)


_barrier_count = 0


def barrier(name: str, timeout_s: int = 1800) -> None:
  """Waits until every process gets here (coordination service, not a
  device collective, so its timeout is ours rather than the collectives').

  Called before the first collective over each group of devices: on CPU,
  gloo sets up a group's communicator at its first collective and gives the
  other processes only 30 s to arrive, after which the process fails and
  then hangs at exit. Later collectives on the group wait as long as needed.
  JAX exposes the coordination client only in jax._src.distributed; the
  public multihost_utils.sync_global_devices is itself a device collective.
  """
  global _barrier_count
  if jax.process_count() == 1:
    return
  from jax._src import distributed  # pylint: disable=g-import-not-at-top
  _barrier_count += 1
  distributed.global_state.client.wait_at_barrier(
      f'simclr_jax_{name}_{_barrier_count}', timeout_in_ms=timeout_s * 1000)


def global_batch(mesh: Mesh, local_batch: dict) -> dict:
  """Assembles this process's slice of a batch into global jax.Arrays."""
  sharding = batch_sharded(mesh)
  return {k: jax.make_array_from_process_local_data(sharding, np.asarray(v))
          for k, v in local_batch.items()}


def replicate(mesh: Mesh, tree: Any) -> Any:
  """Places a host pytree (identical on every process) replicated on the mesh."""
  sharding = replicated(mesh)
  return jax.tree.map(
      lambda x: jax.make_array_from_process_local_data(
          sharding, np.asarray(x), np.shape(x)), tree)


def to_host(x) -> np.ndarray:
  """A global jax.Array as one numpy array on every process."""
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
    return np.asarray(multihost_utils.process_allgather(x, tiled=True))
  return np.asarray(x)


def prefetch(mesh: Mesh, batches: Iterator[dict], size: int = 2) -> Iterator[dict]:
  """Keeps `size` global batches in flight so host-to-device copies overlap steps."""
  queue = []
  for batch in batches:
    queue.append(global_batch(mesh, batch))
    if len(queue) > size:
      yield queue.pop(0)
  while queue:
    yield queue.pop(0)
