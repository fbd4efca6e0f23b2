"""k-NN evaluation on encoder features: a label-cheap monitor of representation
quality (cosine similarity on h, majority vote of the k nearest train examples).
"""

import jax
import jax.numpy as jnp
import numpy as np

from simclr_jax import data, parallel


def knn_predict(train_features, train_labels, query_features, *, k: int,
                num_classes: int, chunk: int = 1024) -> np.ndarray:
  """Class predictions by a cosine k-NN majority vote.

  Ties between classes are broken by the summed similarity of their votes.
  """
  train = jnp.asarray(train_features, jnp.float32)
  train = train / jnp.maximum(jnp.linalg.norm(train, axis=1, keepdims=True), 1e-12)
  labels = jnp.asarray(train_labels, jnp.int32)
  k = min(k, train.shape[0])

  @jax.jit
  def predict(queries):
    q = queries / jnp.maximum(jnp.linalg.norm(queries, axis=1, keepdims=True), 1e-12)
    sims, idx = jax.lax.top_k(q @ train.T, k)
    votes = jax.nn.one_hot(labels[idx], num_classes)          # [n, k, C]
    score = votes.sum(1) + 1e-3 * (votes * sims[..., None]).sum(1)
    return jnp.argmax(score, axis=1)

  query = np.asarray(query_features, np.float32)
  preds = [np.asarray(predict(jnp.asarray(query[i:i + chunk])))
           for i in range(0, len(query), chunk)]
  return np.concatenate(preds) if preds else np.zeros((0,), np.int32)


def extract_features(exp, variables, split: str, key: str = 'h'):
  """(features, labels) of every example of `split`, eval preprocessing.

  Runs the model data-parallel; each process gets all rows (gathered), in a
  fixed order, padding removed.
  """
  model = exp.model

  def step(variables, batch):
    return model.apply(variables, batch['images'][:, 0], train=False)[key]

  fn = parallel.shard_step(step, exp.mesh, batch_argnums=(1,), num_args=2,
                           out_batch=True)
  feats, labels = [], []
  for local in data.make_eval_iterator(exp.config, split=split):
    batch = parallel.global_batch(exp.mesh, local)
    out = fn(variables, batch)
    gathered = (_to_host(out), _to_host(batch['labels']),
                _to_host(batch['label_mask']))
    valid = gathered[2] > 0
    feats.append(gathered[0][valid])
    labels.append(gathered[1][valid])
  return np.concatenate(feats), np.concatenate(labels)


def _to_host(x):
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
    return np.asarray(multihost_utils.process_allgather(x, tiled=True))
  return np.asarray(x)


def knn_accuracy(exp, variables, *, k: int, train_split=None,
                 eval_split=None) -> float:
  """Top-1 of the cosine k-NN classifier: train split as memory, eval split
  as queries."""
  config = exp.config
  train_x, train_y = extract_features(exp, variables,
                                      train_split or config.train_split)
  test_x, test_y = extract_features(exp, variables,
                                    eval_split or config.eval_split)
  preds = knn_predict(train_x, train_y, test_x, k=k,
                      num_classes=exp.info.num_classes)
  return float(np.mean(preds == test_y))
