"""hmmop's module paths from before its subpackages, kept working.

``import hmmop.op``, ``from hmmop.native import load``, ``hmmop.op.hmm_forward`` give the module at its
new home (here hmmop.ops.categorical and hmmop.ops.native): the same module object, so that its state
(native's ``_loaded``, threads' ``_override``) exists once, whichever path a program uses.

No file is left at an old path: git then records each move as a rename, so that a change made on
another branch to, say, hmmop/op.py merges into hmmop/ops/categorical.py (a three-line file at the old
path would turn it into a conflict there).  Instead ``import hmmop`` puts ``OldPathFinder`` first on
``sys.meta_path``; it answers for the names in ``MOVED`` alone, and does what such a file would do -
import the new home and put it into ``sys.modules`` under the old name - when the old path is first
imported.  First, so that no other finder answers for an old path with another module: an editable
install's finder maps hmmop's children to its own source tree, which may still hold the old files.
hmmop's ``__getattr__`` gives the old names as attributes of the package (``hmmop.op`` after
``import hmmop``), as before.
"""
import importlib
import importlib.machinery
import sys

PACKAGE = __name__.rpartition(".")[0]           # "hmmop"

# old module (hmmop.OLD) -> its new home (hmmop.NEW)
MOVED = {
    "op": "ops.categorical",
    "dense": "ops.dense",
    "native": "ops.native",
    "ndarray_path": "ops.ndarray_path",
    "dense_ndarray": "ops.dense_ndarray",
    "unroll": "ops.unroll",
    "checks": "ops.checks",
    "ndview": "ops.ndview",
    "threads": "ops.threads",
    "block": "nn.hmm_block",
    "trainer": "fit.trainer",
    "em": "fit.em",
    "monitor": "fit.monitor",
    "priors": "fit.priors",
    "distributed": "fit.distributed",
    "model": "models.hmm",
    "files": "cli.files",
    "plots": "cli.plots",
    "benchmarks": "cli.benchmarks",
}
# hmmop.cli, once a module, is now a package: hmmop.cli.main (the console script's entry point) is
# there as before; the rest of the old module is hmmop.cli.commands.


def new_home(name):
    """The module that hmmop.NAME (NAME a key of MOVED) now is, imported."""
    return importlib.import_module(f"{PACKAGE}.{MOVED[name]}")


class OldPathFinder:
    """A meta-path finder (and loader) for hmmop's old module paths, and nothing else."""

    def find_spec(self, fullname, path=None, target=None):
        package, _, name = fullname.rpartition(".")
        if package != PACKAGE or name not in MOVED:
            return None
        return importlib.machinery.ModuleSpec(fullname, self)

    def create_module(self, spec):
        return None                 # a placeholder: exec_module puts the real module in its place

    def exec_module(self, module):
        # The import system then returns what sys.modules holds under the old name, and sets it on hmmop.
        sys.modules[module.__name__] = new_home(module.__name__.rpartition(".")[2])


def attribute(name):
    """hmmop.NAME for an old module name, imported through its old path (hmmop's __getattr__)."""
    if name not in MOVED:
        raise AttributeError(f"module {PACKAGE!r} has no attribute {name!r}")
    return importlib.import_module(f"{PACKAGE}.{name}")


def install():
    """Put the finder first on sys.meta_path, once per process."""
    if not any(isinstance(f, OldPathFinder) for f in sys.meta_path):
        sys.meta_path.insert(0, OldPathFinder())
