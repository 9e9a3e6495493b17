"""Import paths that moved: the old path still imports, with a warning naming the new one.

A moved module keeps working under its old name for one release. Importing it returns
the module at its new place (the same object) and warns with a ``DeprecationWarning``
that names that place. ``MOVED`` is the one list of such paths.
"""

import importlib
import importlib.abc
import importlib.util
import sys
import warnings

MOVED = {
    # Layout of 0.2: modules moved into packages by role.
    "metaopt.checks": "metaopt.core.checks",
    "metaopt.files": "metaopt.core.files",
    "metaopt.optax_adapter": "metaopt.core.optax_adapter",
    "metaopt.unroll": "metaopt.core.unroll",
    "metaopt.types": "metaopt.core.types",
    "metaopt.evaluate": "metaopt.evaluation.evaluate",
    "metaopt.report": "metaopt.evaluation.report",
    "metaopt.checkpoint": "metaopt.io.checkpoint",
    "metaopt.pretrained": "metaopt.io.pretrained",
    "metaopt.serialization": "metaopt.io.serialization",
    "metaopt.lstm": "metaopt.optimizers.lstm",
    "metaopt.mlp_lopt": "metaopt.optimizers.mlp",
    "metaopt.preprocess": "metaopt.optimizers.preprocess",
    "metaopt.split_lopt": "metaopt.optimizers.split",
    "metaopt.classification": "metaopt.tasks.classification",
    "metaopt.conv": "metaopt.tasks.conv",
    "metaopt.datasets": "metaopt.tasks.datasets",
    "metaopt.quadratic": "metaopt.tasks.quadratic",
    "metaopt.regression": "metaopt.tasks.regression",
    "metaopt.truncated_bptt": "metaopt.estimators.tbptt",
    "metaopt.meta_train": "metaopt.train.loop",
    "metaopt.run_config": "metaopt.train.config",
    "metaopt.run_plots": "metaopt.train.plots",
    # Layout of 0.3: the run layer beside the loop, the paper experiments in their own
    # package, the command line only parsing flags.
    "metaopt.cli.config": "metaopt.train.config",
    "metaopt.cli.plots": "metaopt.train.plots",
    "metaopt.cli.hosts": "metaopt.train.hosts",
    "metaopt.cli.demo": "metaopt.experiments.learning_to_learn",
    "metaopt.cli.fewshot_demo": "metaopt.experiments.fewshot",
    "metaopt.demo": "metaopt.experiments.learning_to_learn",
}


class _Loader(importlib.abc.Loader):
    def __init__(self, new: str):
        self.new = new

    def create_module(self, spec):
        return importlib.import_module(self.new)

    def exec_module(self, module):
        del module  # the module at its new place is already executed


class _MovedFinder(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname, path=None, target=None):
        del path, target
        new = MOVED.get(fullname)
        if new is None:
            return None
        warnings.warn(
            f"{fullname} has moved to {new}; import it from there (the old path goes "
            "away in the next release)",
            DeprecationWarning,
            stacklevel=3,
        )
        return importlib.util.spec_from_loader(fullname, _Loader(new))


def install() -> None:
    """Lets the old import paths in ``MOVED`` resolve (idempotent)."""
    if not any(isinstance(f, _MovedFinder) for f in sys.meta_path):
        sys.meta_path.append(_MovedFinder())
