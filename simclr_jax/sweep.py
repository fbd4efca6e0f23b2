"""Config sweeps in the style of big_vision's `hyper`: a config module's
`get_sweep(hyper)` returns a list of override dicts {'config.a.b': value}.

    def get_sweep(hyper):
      return hyper.product([hyper.sweep('config.train.temperature', [0.1, 0.5]),
                            hyper.sweep('config.train.batch_size', [256, 512])])
"""

import itertools
import re
from typing import Any, Sequence


def sweep(key: str, values: Sequence[Any]) -> list[dict]:
  return [{key: v} for v in values]


def product(sweeps: Sequence[list[dict]]) -> list[dict]:
  runs = []
  for combo in itertools.product(*sweeps):
    merged = {}
    for part in combo:
      merged.update(part)
    runs.append(merged)
  return runs


def zipit(sweeps: Sequence[list[dict]]) -> list[dict]:
  lengths = {len(s) for s in sweeps}
  if len(lengths) > 1:
    raise ValueError(f'hyper.zipit needs sweeps of equal length, got {lengths}')
  return [dict(kv for part in combo for kv in part.items())
          for combo in zip(*sweeps)]


def fixed(key: str, value: Any) -> list[dict]:
  return [{key: value}]


class hyper:  # pylint: disable=invalid-name
  """Namespace handed to `get_sweep`."""
  sweep = staticmethod(sweep)
  product = staticmethod(product)
  zipit = staticmethod(zipit)
  fixed = staticmethod(fixed)


def run_name(overrides: dict) -> str:
  """A workdir-safe name from the overrides, e.g. 'temperature=0.5,batch_size=256'."""
  parts = []
  for key, value in overrides.items():
    short = key.removeprefix('config.').split('.')[-1]
    parts.append(f'{short}={value}')
  return re.sub(r'[^A-Za-z0-9=,._-]', '_', ','.join(parts)) or 'base'


def apply_overrides(config, overrides: dict):
  """A copy of `config` with the overrides set; unknown keys are errors."""
  config = config.copy_and_resolve_references()
  for key, value in overrides.items():
    path = key.removeprefix('config.').split('.')
    node = config
    for part in path[:-1]:
      if part not in node:
        raise KeyError(f'Sweep key {key!r} is not a config field ({part!r} '
                       'missing).')
      node = node[part]
    if path[-1] not in node:
      raise KeyError(f'Sweep key {key!r} is not a config field.')
    node[path[-1]] = value
  return config
