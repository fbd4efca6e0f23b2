"""Evaluation on digits' test split of any digits workdir's checkpoint.

Top-1/top-5 of the checkpoint's classifier (finetune, linear_eval, distill or
supervised head; pretraining's online probe) and, on every checkpoint, a
k-NN (k=20, cosine) top-1 on h. Writes nothing; `--workdir` is unused when
`init` is given. Args: `init=PATH` (a workdir or one of its
checkpoints/<step>), `knn=20` (0 = off), `runlocal` (k=5).
"""

from simclr_jax.configs import default, digits


def get_config(arg=None):
  args = default.parse_arg(arg, init='', knn=20, runlocal=False)
  config = digits.get_config('runlocal' if args.runlocal else None)
  config.mode = 'eval'
  config.init_checkpoint = args.init
  config.evals.knn.k = min(args.knn, 5) if args.runlocal else args.knn
  return config
