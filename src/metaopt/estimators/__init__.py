"""Meta-gradient estimators, one per module, with their objectives and horizon schedules.

Example:
  >>> import metaopt
  >>> "pes" in metaopt.estimators.ESTIMATORS
  True
"""

from metaopt.estimators.episodic import episodic
from metaopt.estimators.es import es
from metaopt.estimators.full_bptt import full_bptt
from metaopt.estimators.maml import fomaml, maml
from metaopt.estimators.mixture import mixture
from metaopt.estimators.nres import nres
from metaopt.estimators.objectives import Objective, final_loss, held_out, trajectory_mean
from metaopt.estimators.options import RunSpec
from metaopt.estimators.pes import pes
from metaopt.estimators.pretraining import pretraining
from metaopt.estimators.registry import ESTIMATORS
from metaopt.estimators.reptile import reptile
from metaopt.estimators.schedules import (
    HorizonSchedule,
    constant_schedule,
    log_uniform_schedule,
)
from metaopt.estimators.tbptt import tbptt

__all__ = [
    "ESTIMATORS",
    "HorizonSchedule",
    "Objective",
    "RunSpec",
    "constant_schedule",
    "episodic",
    "es",
    "final_loss",
    "fomaml",
    "full_bptt",
    "held_out",
    "log_uniform_schedule",
    "maml",
    "mixture",
    "nres",
    "pes",
    "pretraining",
    "reptile",
    "tbptt",
    "trajectory_mean",
]
