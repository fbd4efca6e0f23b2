"""The k-NN classifier of the knn evaluator (evaluators.py): cosine similarity
on h, majority vote of the k nearest train examples."""

import jax
import jax.numpy as jnp
import numpy as np


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
