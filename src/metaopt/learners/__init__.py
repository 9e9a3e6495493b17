"""Meta-learners: what θ is (an optimizer's weights, an initialization, learning rates).

Example:
  >>> import metaopt
  >>> metaopt.learners.LEARNERS.names("optimizer")
  ('learned_optimizer', 'learned_init+optimizer')
"""

from metaopt.learners.adapt import adapt, initial_params
from metaopt.learners.combine import combine
from metaopt.learners.initialization import learned_initialization
from metaopt.learners.learned_optimizer import learned_optimizer
from metaopt.learners.learning_rates import meta_sgd, per_parameter_sgd
from metaopt.learners.registry import LEARNERS

__all__ = [
    "LEARNERS",
    "adapt",
    "combine",
    "initial_params",
    "learned_initialization",
    "learned_optimizer",
    "meta_sgd",
    "per_parameter_sgd",
]
