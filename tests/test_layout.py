"""hmmop's layout: imports point down, the module paths from before the subpackages still work, the
public names are there.

Floors (FLOORS, bottom first): a module imports from its own room or from rooms on lower floors,
never from its floor's other rooms or from above - read from the source (every import statement,
those inside functions too), so that an import that climbs fails here.  Every old path (hmmop.op,
hmmop.native, ...) gives the module at its new home - the same object, so that its state exists
once - through ``import``, ``from hmmop import ...`` and as an attribute of hmmop, in this process
and in a fresh one.
"""
import ast
import importlib
import os
import pkgutil
import subprocess
import sys

import pytest

import hmmop

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# bottom first: the rooms of each floor (a room: a subpackage, or a module of hmmop's top level)
FLOORS = [
    {"hmmop._kernel", "hmmop.data"},
    {"hmmop.ops"},
    {"hmmop.inference", "hmmop.gist"},
    {"hmmop.nn"},
    {"hmmop.fit"},
    {"hmmop.emissions"},
    {"hmmop.models"},
    {"hmmop._old_paths"},               # the old paths' table: it names modules, imports none
    {"hmmop"},                          # the public face (hmmop/__init__.py)
    {"hmmop.cli", "hmmop.hmmlearn"},    # two facades: the command line and hmmlearn's classes
    {"hmmop.__main__"},
]
FLOOR = {room: level for level, rooms in enumerate(FLOORS) for room in rooms}

# old path -> new home
OLD_PATHS = {
    "hmmop.op": "hmmop.ops.categorical",
    "hmmop.dense": "hmmop.ops.dense",
    "hmmop.native": "hmmop.ops.native",
    "hmmop.ndarray_path": "hmmop.ops.ndarray_path",
    "hmmop.dense_ndarray": "hmmop.ops.dense_ndarray",
    "hmmop.unroll": "hmmop.ops.unroll",
    "hmmop.checks": "hmmop.ops.checks",
    "hmmop.ndview": "hmmop.ops.ndview",
    "hmmop.threads": "hmmop.ops.threads",
    "hmmop.block": "hmmop.nn.hmm_block",
    "hmmop.trainer": "hmmop.fit.trainer",
    "hmmop.em": "hmmop.fit.em",
    "hmmop.monitor": "hmmop.fit.monitor",
    "hmmop.priors": "hmmop.fit.priors",
    "hmmop.distributed": "hmmop.fit.distributed",
    "hmmop.model": "hmmop.models.hmm",
    "hmmop.files": "hmmop.cli.files",
    "hmmop.plots": "hmmop.cli.plots",
    "hmmop.benchmarks": "hmmop.cli.benchmarks",
}


@pytest.mark.parametrize("old,new", sorted(OLD_PATHS.items()))
def test_an_old_path_is_the_module_at_its_new_home(old, new):
    module = importlib.import_module(new)
    assert module.__name__ == new
    assert importlib.import_module(old) is module and sys.modules[old] is module
    name = old.rpartition(".")[2]
    assert getattr(hmmop, name) is module
    scope = {}
    exec(f"from hmmop import {name} as m", scope)
    assert scope["m"] is module


def test_the_old_paths_are_these_alone():
    assert {f"hmmop.{old}" for old in hmmop._old_paths.MOVED} == set(OLD_PATHS)
    assert importlib.util.find_spec("hmmop.no_such_module") is None
    with pytest.raises(ModuleNotFoundError):
        importlib.import_module("hmmop.no_such_module")
    with pytest.raises(AttributeError, match="no_such_name"):
        hmmop.no_such_name


def test_old_paths_in_a_fresh_process():
    """Each old path imported first thing in a new process (no other hmmop module imported yet), and
    module state shared: set_num_threads through one path is seen through the other."""
    code = "\n".join([
        "import sys",
        *(f"import {old}" for old in OLD_PATHS),
        *(f"import {new}; assert sys.modules[{old!r}] is sys.modules[{new!r}], {old!r}"
          for old, new in OLD_PATHS.items()),
        "from hmmop.threads import set_num_threads",
        "set_num_threads(3)",
        "import hmmop.ops.threads",
        "assert hmmop.ops.threads._override == 3 and hmmop.get_num_threads() == 3",
        "import hmmop.native",
        "assert hmmop.native.load() is hmmop.ops.native._loaded",
        "print('ok')",
    ])
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([ROOT, os.environ.get("PYTHONPATH", "")]))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, env=env,
                         timeout=180)
    assert out.returncode == 0 and out.stdout == "ok\n", out.stderr


def test_the_public_names_are_there():
    for name in hmmop.__all__:
        assert getattr(hmmop, name) is not None, name
    from hmmop import models
    from hmmop.cli import commands
    from hmmop.fit import em, monitor, trainer
    from hmmop.nn import hmm_block
    from hmmop.ops import categorical, dense, native, threads, unroll
    assert hmmop.HMM is models.hmm.HMM and hmmop.EmissionHMM is models.EmissionHMM and hmmop.load is models.load
    assert hmmop.HMMBlock is hmm_block.HMMBlock and hmmop.Trainer is trainer.Trainer
    assert hmmop.DivergenceError is monitor.DivergenceError and hmmop.em is em
    assert hmmop.hmm_forward is categorical.hmm_forward
    assert hmmop.hmm_forward_dense is dense.hmm_forward_dense
    assert hmmop.GaussianHMM is models.GaussianHMM
    assert hmmop.native is native
    assert hmmop.get_num_threads is threads.get_num_threads and hmmop.set_num_threads is threads.set_num_threads
    assert hmmop.unroll_forward is unroll.unroll_forward and hmmop.unroll_forward_dense is unroll.unroll_forward_dense
    # the console script (pyproject.toml: hmmop = "hmmop.cli:main") and python -m hmmop
    assert pkgutil.resolve_name("hmmop.cli:main") is commands.main
    assert pyproject()["project"]["scripts"] == {"hmmop": "hmmop.cli:main"}


def pyproject():
    """pyproject.toml, parsed (tomllib from Python 3.11 on, else tomli where it is installed)."""
    try:
        import tomllib
    except ImportError:
        tomllib = pytest.importorskip("tomli")
    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as f:
        return tomllib.load(f)


def test_setup_lists_every_package():
    """A regular install takes only the packages pyproject.toml names: every folder of hmmop must be there."""
    listed = pyproject()["tool"]["setuptools"]["packages"]
    top = os.path.dirname(hmmop.__file__)
    found = {os.path.relpath(d, os.path.dirname(top)).replace(os.sep, ".")
             for d, _, files in os.walk(top) if "__init__.py" in files}
    assert sorted(listed) == sorted(found)



def room(module):
    """hmmop.ops.dense -> hmmop.ops; hmmop.inference -> hmmop.inference; hmmop -> hmmop."""
    return ".".join(module.split(".")[:2])


def is_module(top, name):
    """Whether hmmop.X.Y (``name``) is a module or package of the source tree at ``top`` (the kernel: its .pyx)."""
    path = os.path.join(top, *name.split(".")[1:])
    return any(os.path.isfile(p) for p in (path + ".py", path + ".pyx", os.path.join(path, "__init__.py")))


def imports(top, path, module, is_package):
    """(line, imported module) of every hmmop import in a source file, relative ones resolved;
    ``from P import name`` counts as importing P.name where that is a module, else P (so an old path
    through the package, ``from .. import native``, counts as importing the public face)."""
    base = module if is_package else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(open(path).read(), path)):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            parent = base.rsplit(".", node.level - 1)[0] if node.level else ""
            package = ".".join(p for p in (parent, node.module) if p)
            targets = [f"{package}.{alias.name}" if is_module(top, f"{package}.{alias.name}") else package
                       for alias in node.names]
        else:
            continue
        yield from ((node.lineno, t) for t in targets if t == "hmmop" or t.startswith("hmmop."))


def test_imports_point_down():
    top = os.path.dirname(hmmop.__file__)
    climbs, seen = [], set()
    for folder, _, files in os.walk(top):
        for name in sorted(f for f in files if f.endswith(".py")):
            path = os.path.join(folder, name)
            parts = os.path.relpath(path, os.path.dirname(top))[:-3].split(os.sep)
            is_package = parts[-1] == "__init__"
            module = ".".join(parts[:-1] if is_package else parts)
            here = room(module)
            assert here in FLOOR, f"{module}: its room {here} is on no floor of FLOORS"
            seen.add(here)
            for line, target in imports(top, path, module, is_package):
                there = room(target)
                assert there in FLOOR, f"{module}:{line} imports {target}, on no floor of FLOORS"
                if there != here and FLOOR[there] >= FLOOR[here]:
                    climbs.append(f"{os.path.relpath(path, top)}:{line}: {here} (floor {FLOOR[here]}) "
                                  f"imports {target} (floor {FLOOR[there]})")
    assert not climbs, "imports that do not point down:\n" + "\n".join(climbs)
    assert seen | {"hmmop._kernel"} == set(FLOOR), "FLOORS names a room that holds no module"
