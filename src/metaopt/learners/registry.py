"""Every meta-learner metaopt knows by name: what θ is in a run.

Each learner declares its :class:`~metaopt.core.registry.Entry` in its own module;
``entry.build(lopt, family, options) -> MetaLearner`` takes the run's learned optimizer
(used by learners with the ``optimizer`` trait), its task family and the entry's
options. Traits: ``optimizer`` (θ holds a learned optimizer's weights),
``initialization`` (θ holds the inner run's initialization; Reptile needs one),
``episodic`` (an :class:`~metaopt.core.types.EpisodicLearner`, built for the family's
episodes and trained by the ``episodic`` estimator).

Example:
  >>> LEARNERS.names("initialization")
  ('learned_init', 'metasgd', 'learned_init+optimizer')
  >>> LEARNERS.names("episodic")
  ('prototypical', 'matching', 'mann')
"""

from metaopt.core.registry import Entry, Registry
from metaopt.core.types import LearnedOptimizer, MetaLearner, TaskFamily
from metaopt.learners.combine import combine
from metaopt.learners.initialization import ENTRY as LEARNED_INIT
from metaopt.learners.initialization import learned_initialization
from metaopt.learners.learned_optimizer import ENTRY as LEARNED_OPTIMIZER
from metaopt.learners.learned_optimizer import learned_optimizer
from metaopt.learners.learning_rates import ENTRY as METASGD
from metaopt.learners.mann import ENTRY as MANN
from metaopt.learners.matching import ENTRY as MATCHING
from metaopt.learners.prototypical import ENTRY as PROTOTYPICAL


def _init_and_optimizer(lopt: LearnedOptimizer, family: TaskFamily, options: None) -> MetaLearner:
    del options
    return combine(learned_initialization(family), learned_optimizer(lopt))


LEARNERS = Registry(
    "learner",
    [
        LEARNED_OPTIMIZER,
        LEARNED_INIT,
        METASGD,
        Entry(
            "learned_init+optimizer",
            _init_and_optimizer,
            None,
            "θ is an initialization and a learned optimizer's weights, jointly",
            frozenset({"initialization", "optimizer"}),
        ),
        PROTOTYPICAL,
        MATCHING,
        MANN,
    ],
)
