"""Meta-learners: what θ is (an optimizer's weights, an initialization, learning rates).

Example:
  >>> import metaopt
  >>> metaopt.learners.LEARNERS.names("optimizer")
  ('learned_optimizer', 'learned_init+optimizer')
"""

from metaopt.learners.adapt import adapt, initial_params
from metaopt.learners.combine import combine
from metaopt.learners.embedding import (
    Embedding,
    conv_embedding,
    identity_embedding,
    mlp_embedding,
)
from metaopt.learners.episodic import classify
from metaopt.learners.initialization import learned_initialization
from metaopt.learners.learned_optimizer import learned_optimizer
from metaopt.learners.learning_rates import meta_sgd, per_parameter_sgd
from metaopt.learners.mann import memory_augmented_network
from metaopt.learners.matching import matching_network
from metaopt.learners.prototypical import prototypical_network
from metaopt.learners.registry import LEARNERS

__all__ = [
    "LEARNERS",
    "Embedding",
    "adapt",
    "classify",
    "combine",
    "conv_embedding",
    "identity_embedding",
    "initial_params",
    "learned_initialization",
    "learned_optimizer",
    "matching_network",
    "memory_augmented_network",
    "meta_sgd",
    "mlp_embedding",
    "per_parameter_sgd",
    "prototypical_network",
]
