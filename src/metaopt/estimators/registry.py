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
:mod:`metaopt.diagnostics` compares with the exact gradient).

Adding an estimator: a module with its factory and ``ENTRY``, and one line below. A user
may also ``ESTIMATORS.register(entry)`` at run time.

Example:
  >>> ESTIMATORS["pes"].summary.startswith("persistent")
  True
  >>> "tbptt" in ESTIMATORS.names("truncated")
  True
"""

from metaopt.core.registry import Registry
from metaopt.estimators import es, full_bptt, maml, nres, pes, pretraining, reptile, tbptt

ESTIMATORS = Registry(
    "estimator",
    [
        tbptt.ENTRY,
        full_bptt.ENTRY,
        es.ENTRY,
        pes.ENTRY,
        nres.ENTRY,
        maml.ENTRY,
        maml.FIRST_ORDER_ENTRY,
        reptile.ENTRY,
        pretraining.ENTRY,
    ],
    aliases={"full": "full_bptt"},
)
