"""The meta-training distribution of the ``orthogonal`` learned optimizer.

A mixture of task families users meet, each under random reparameterization
(:func:`~metaopt.tasks.augment.rescaled`), trained by PES with a log-loss objective
measured on held-out data wherever a family has it (generalization is what is judged):

- causal character transformers (1–2 blocks of 16–32 units, 1–2 heads, contexts of
  16–32) on the ``pydoc`` help text: attention, LayerNorm, embeddings;
- batch-normalized conv nets with dropout on the digits;
- wide MLPs on the digits: one hidden layer of 128–512 units (its first layer is
  orthogonalized), and two of 128–256, whose 256×256 hidden layer takes the optimizer's
  other path for large matrices;
- student-teacher ReLU regressions (fresh samples every step, so the training loss is
  already a held-out one), shallow and deep with label noise.

None of the problems of :mod:`metaopt.evaluation.report_suite` shares an architecture
and dataset with these families: its text is Python source, not the help text.
"""

import jax
import jax.numpy as jnp

from metaopt.core.types import Estimator, MetaLearner, TaskFamily
from metaopt.estimators.objectives import Objective, custom
from metaopt.tasks.augment import rescaled
from metaopt.tasks.batchnorm_conv import batchnorm_conv_family
from metaopt.tasks.datasets import digits
from metaopt.tasks.regression import mlp_regression_family
from metaopt.tasks.text import pydoc_topics
from metaopt.tasks.transformer_lm import transformer_lm_family
from metaopt.tasks.wide_mlp import wide_mlp_family
from metaopt.train.versatile import MAX_LOSS, pes_mixture


def _log(loss: jax.Array) -> jax.Array:
    loss = jnp.where(jnp.isfinite(loss), loss, MAX_LOSS)
    return jnp.log(jnp.clip(loss, 1e-8, MAX_LOSS))


def _log_held_out(family: TaskFamily, cfg, params, key: jax.Array) -> jax.Array:
    measure = family.loss if family.eval_loss is None else family.eval_loss
    return _log(measure(cfg, params, key))


def log_held_out_objective() -> Objective:
    """The mean log held-out loss over each truncation; a diverged loss counts as 1e4.

    Families without held-out data are measured by their training loss.

    Example:
      >>> log_held_out_objective().name
      'log_held_out'
    """
    return custom("log_held_out", _log_held_out)


def orthogonal_families(max_scale: float = 3.0) -> list[TaskFamily]:
    """The meta-training task families, each rescaled by up to ``max_scale``.

    Example:
      >>> [f.name.split("_")[0] for f in orthogonal_families()]
      ['transformer', 'bn', 'wide', 'wide', 'mlp', 'mlp']
    """
    data = digits()
    families = [
        # Sizes are what two CPU cores meta-train in about an hour; the held-out measure,
        # taken after every inner step, reads a few batches' worth of examples.
        transformer_lm_family(
            pydoc_topics(),
            widths=(16, 32),
            depths=(1, 2),
            heads=(1, 2),
            seq_lens=(16, 32),
            batch_size=8,
            eval_batch_size=8,
        ),
        batchnorm_conv_family(
            data, channels=(4, 8), hidden_size=16, batch_size=32, eval_batch_size=64
        ),
        wide_mlp_family(data, widths=(128, 256, 512), num_layers=1, eval_batch_size=128),
        wide_mlp_family(data, widths=(128, 256), num_layers=2, eval_batch_size=128),
        mlp_regression_family(input_dim=8, hidden_sizes=(32, 32), batch_size=64),
        mlp_regression_family(
            input_dim=8, hidden_sizes=(32, 32, 32, 32), batch_size=16, noise_std=0.1
        ),
    ]
    return [rescaled(f, max_scale=max_scale) for f in families]


def orthogonal_estimator(
    learner: MetaLearner,
    *,
    num_tasks: int = 4,
    truncation: int = 20,
    min_horizon: int = 300,
    max_horizon: int = 3000,
    std: float = 0.01,
    max_scale: float = 3.0,
) -> Estimator:
    """PES over every family of :func:`orthogonal_families`, averaged per meta-step.

    Args:
      learner: the meta-learner (a learned optimizer).
      num_tasks: tasks per family in each meta-batch.
      truncation: inner steps per truncation.
      min_horizon: the shortest task horizon.
      max_horizon: the longest task horizon (horizons are log-uniform in between).
      std: PES perturbation standard deviation.
      max_scale: the largest random rescaling of a parameter tensor.

    Example:
      >>> from metaopt import learned_optimizer
      >>> from metaopt.optimizers.orthogonal import orthogonal_optimizer
      >>> est = orthogonal_estimator(learned_optimizer(orthogonal_optimizer()), num_tasks=2,
      ...     truncation=10, min_horizon=20, max_horizon=40)
      >>> est.function_steps
      240
    """
    return pes_mixture(
        learner,
        orthogonal_families(max_scale),
        objective=log_held_out_objective(),
        num_tasks=num_tasks,
        truncation=truncation,
        min_horizon=min_horizon,
        max_horizon=max_horizon,
        std=std,
    )
