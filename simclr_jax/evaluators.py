"""The evaluators config.evals lists, each compiled once per run.

An evaluator is called with a model's variables (replicated on the mesh) and
returns a dict of scalars. The trainer runs each at its own interval
(`every_steps`) and all of them after the last step; mode=eval runs them on
a checkpoint.
  * accuracy: top-1 / top-5 of the task's classifier (the supervised head, or
    pretraining's online linear probe) on config.eval_split.
  * knn: top-1 of a cosine k-NN vote on h (train split as memory, eval split
    as queries), a label-cheap monitor of the representation.
"""

import jax
import jax.numpy as jnp
import numpy as np

from simclr_jax import knn, losses, parallel
from simclr_jax.parallel import DATA_AXIS


class Accuracy:
  """Top-1 / top-5 accuracy of `logits_key` on config.eval_split."""

  def __init__(self, model, mesh, dataset, logits_key: str, every_steps: int):
    self.dataset = dataset
    self.mesh = mesh
    self.every_steps = every_steps
    k = min(5, dataset.info.num_classes)

    def step(variables, batch):
      out = model.apply(variables, batch['images'][:, 0], train=False)
      logits, labels, mask = (out[logits_key], batch['labels'],
                              batch['label_mask'])
      sums = {'top1': jnp.sum(losses.topk_correct(logits, labels, 1) * mask),
              'top5': jnp.sum(losses.topk_correct(logits, labels, k) * mask),
              'count': jnp.sum(mask)}
      return jax.lax.psum(sums, DATA_AXIS)

    self._step = parallel.shard_step(step, mesh, batch_argnums=(1,),
                                     num_args=2)

  def __call__(self, variables) -> dict:
    totals = None
    for batch in parallel.prefetch(self.mesh, self.dataset.eval_iter()):
      sums = self._step(variables, batch)
      totals = sums if totals is None else jax.tree.map(jnp.add, totals, sums)
    totals = jax.device_get(totals)
    count = max(float(totals['count']), 1.0)
    return {'top1': float(totals['top1']) / count,
            'top5': float(totals['top5']) / count,
            'count': int(totals['count'])}


class Features:
  """h of every labelled example of a split, compiled once."""

  def __init__(self, model, mesh, dataset):
    self.dataset = dataset
    self.mesh = mesh

    def features(variables, batch):
      return model.apply(variables, batch['images'][:, 0], train=False)['h']

    self._features = parallel.shard_step(features, mesh, batch_argnums=(1,),
                                         num_args=2, out_batch=True)

  def __call__(self, variables, split: str):
    """(h, labels) with eval preprocessing; every process gets all rows, in
    a fixed order."""
    feats, labels = [], []
    for local in self.dataset.eval_iter(split):
      batch = parallel.global_batch(self.mesh, local)
      out = self._features(variables, batch)
      valid = parallel.to_host(batch['label_mask']) > 0
      feats.append(parallel.to_host(out)[valid])
      labels.append(parallel.to_host(batch['labels'])[valid])
    return np.concatenate(feats), np.concatenate(labels)


class KNN:
  """Top-1 of the cosine k-NN classifier on h."""

  def __init__(self, model, mesh, dataset, k: int, every_steps: int):
    self.dataset = dataset
    self.k = k
    self.every_steps = every_steps
    self.features = Features(model, mesh, dataset)

  def __call__(self, variables) -> dict:
    config = self.dataset.config
    train_x, train_y = self.features(variables, config.train_split)
    test_x, test_y = self.features(variables, config.eval_split)
    preds = knn.knn_predict(train_x, train_y, test_x, k=self.k,
                            num_classes=self.dataset.info.num_classes)
    return {'knn_top1': float(np.mean(preds == test_y))}


def from_config(config, *, model, mesh, dataset, logits_key: str) -> dict:
  """The evaluators config.evals turns on, by name: accuracy when the task
  has a classifier and the eval split has labelled examples, knn when
  config.evals.knn.k > 0 and the dataset has labels."""
  found = {}
  labelled = dataset.info.num_classes > 0 and dataset.info.num_eval_examples
  if logits_key and labelled:
    found['accuracy'] = Accuracy(model, mesh, dataset, logits_key,
                                 config.evals.accuracy.every_steps)
  if config.evals.knn.k and labelled:
    found['knn'] = KNN(model, mesh, dataset, config.evals.knn.k,
                       config.evals.knn.every_steps)
  return found
