"""Files: saved optimizers, the pretrained ones that ship, and run checkpoints.

Example:
  >>> import metaopt
  >>> "versatile" in metaopt.io.pretrained_names()
  True
"""

from metaopt.io.checkpoint import restore_latest, save_checkpoint
from metaopt.io.pretrained import load, pretrained, pretrained_names
from metaopt.io.serialization import save

__all__ = ["load", "pretrained", "pretrained_names", "restore_latest", "save", "save_checkpoint"]
