"""Task families: what a learned optimizer or initialization is meta-trained on.

Example:
  >>> import metaopt
  >>> metaopt.tasks.quadratic_family().name
  'quadratic'
"""

from metaopt.tasks import datasets, text
from metaopt.tasks.augment import rescaled
from metaopt.tasks.batchnorm_conv import batchnorm_conv_family
from metaopt.tasks.classification import (
    logistic_regression_family,
    mixed_mlp_classifier_family,
    mlp_classifier_family,
)
from metaopt.tasks.conv import conv_classifier_family
from metaopt.tasks.fewshot import Episode, check_episode, fewshot_family, query_accuracy
from metaopt.tasks.omniglot import omniglot
from metaopt.tasks.quadratic import quadratic_family
from metaopt.tasks.registry import TASKS
from metaopt.tasks.regression import mlp_regression_family
from metaopt.tasks.sinusoid import sinusoid_family
from metaopt.tasks.transformer_lm import transformer_lm_family
from metaopt.tasks.wide_mlp import wide_mlp_family

__all__ = [
    "TASKS",
    "Episode",
    "batchnorm_conv_family",
    "check_episode",
    "conv_classifier_family",
    "datasets",
    "fewshot_family",
    "logistic_regression_family",
    "mixed_mlp_classifier_family",
    "mlp_classifier_family",
    "mlp_regression_family",
    "omniglot",
    "quadratic_family",
    "query_accuracy",
    "rescaled",
    "sinusoid_family",
    "text",
    "transformer_lm_family",
    "wide_mlp_family",
]
