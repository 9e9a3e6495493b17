"""Every estimator metaopt knows by name: the one list the CLI, configs and diagnostics read.

Each estimator declares its :class:`~metaopt.core.registry.Entry` in its own module:
``build(learner, family, run, options) -> Estimator`` with ``run`` a
:class:`~metaopt.estimators.options.RunSpec` and ``options`` an instance of the entry's
options dataclass. Traits: ``truncated`` (meta-steps advance tasks by truncations; an
epoch is ``ceil(horizon / truncation)`` of them), ``whole_horizon`` (one meta-step runs
every task's whole horizon), ``query`` (needs a family with a query set),
``initialization`` (needs a learner with a learned initialization), ``perturbed``
(evolution strategies), ``differentiates`` (backprop through the inner steps),
``diagnosable`` (an estimate of a family's objective over a horizon, which
:mod:`metaopt.diagnostics` compares with the exact gradient), ``episodic`` (trains an
:class:`~metaopt.core.types.EpisodicLearner` on a family's episodes; no inner steps).

Adding an estimator: a module with its factory and ``ENTRY``, and its import and one
line below. A user
may also ``ESTIMATORS.register(entry)`` at run time.

Example:
  >>> ESTIMATORS["pes"].summary.startswith("persistent")
  True
  >>> "tbptt" in ESTIMATORS.names("truncated")
  True
"""

from metaopt.core.registry import Registry
from metaopt.estimators.episodic import ENTRY as EPISODIC
from metaopt.estimators.es import ENTRY as ES
from metaopt.estimators.full_bptt import ENTRY as FULL_BPTT
from metaopt.estimators.maml import ENTRY as MAML
from metaopt.estimators.maml import FIRST_ORDER_ENTRY as FOMAML
from metaopt.estimators.nres import ENTRY as NRES
from metaopt.estimators.pes import ENTRY as PES
from metaopt.estimators.pretraining import ENTRY as PRETRAINING
from metaopt.estimators.reptile import ENTRY as REPTILE
from metaopt.estimators.tbptt import ENTRY as TBPTT

ESTIMATORS = Registry(
    "estimator",
    [
        TBPTT,
        FULL_BPTT,
        ES,
        PES,
        NRES,
        MAML,
        FOMAML,
        REPTILE,
        PRETRAINING,
        EPISODIC,
    ],
    aliases={"full": "full_bptt"},
)
