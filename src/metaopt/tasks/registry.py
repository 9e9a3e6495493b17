"""Every task family metaopt knows by name (``metaopt train --task NAME``).

Each family declares its :class:`~metaopt.core.registry.Entry` in its own module;
``entry.build(split) -> TaskFamily`` with ``split`` one of ``"train"`` (meta-training),
``"val"`` (validation, tuning) and ``"test"`` (evaluation); families without a fixed
dataset draw fresh tasks for every split. Traits: ``query`` (the family has a query set
in ``eval_loss``, as MAML needs), ``episodes`` (its configurations are N-way K-shot
episodes, :class:`~metaopt.tasks.fewshot.Episode`, which episodic learners read).

Example:
  >>> TASKS["quadratic"].build("train").name
  'quadratic'
  >>> TASKS.names("query")
  ('sinusoid', 'fewshot_digits')
"""

from metaopt.core.registry import Registry
from metaopt.tasks import (
    batchnorm_conv,
    classification,
    conv,
    fewshot,
    quadratic,
    regression,
    sinusoid,
    transformer_lm,
    wide_mlp,
)

TASKS = Registry(
    "task",
    [
        quadratic.ENTRY,
        regression.ENTRY,
        classification.ENTRY,
        conv.ENTRY,
        sinusoid.ENTRY,
        fewshot.ENTRY,
        transformer_lm.ENTRY,
        batchnorm_conv.ENTRY,
        wide_mlp.ENTRY,
    ],
)
