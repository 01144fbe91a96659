"""Build of hmmop's compiled parts (the metadata is in pyproject.toml): a Cython extension over the C
kernel in csrc/, with OpenMP, and the native MXNet operator library hmmop/libhmmop_op.so over the same
kernel.

Compiler flags: -O3 -fopenmp, plus HMMOP_ARCH_FLAGS (default "-march=native",
since the package is compiled where it is installed; set it to "" or e.g.
"-march=x86-64-v3" to build a portable binary).  Both builds get the same
flags, in GNU language modes (no -std=c11/c++11: those turn off FMA
contraction, and the two builds would then differ in the last bit).

libhmmop_op.so (csrc/hmm_op.cc, MXNet's extension library API) is compiled
against include/mxnet/lib_api.h and src/lib_api.cc of the mxnet installed at
build time (found without importing it); it does not link libmxnet.  Without
mxnet at build time it is left out, and hmmop runs on its CustomOp alone.
"""
import importlib.util
import os
import shlex
import sys

from Cython.Build import cythonize
from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext
from setuptools.command.build_py import build_py

PTH = "hmmop-mxnet-numpy.pth"


class build_py_with_pth(build_py):
    """Also puts hmmop-mxnet-numpy.pth beside the packages (see _hmmop_mxnet_hook.py):
    Python runs it at start-up, so mxnet imports on numpy >= 1.24 even before hmmop."""

    def run(self):
        super().run()
        self.copy_file(PTH, os.path.join(self.build_lib, PTH))

    def get_outputs(self, include_bytecode=True):
        return super().get_outputs(include_bytecode) + [os.path.join(self.build_lib, PTH)]

arch = shlex.split(os.environ.get("HMMOP_ARCH_FLAGS", "-march=native"))
KERNEL_SOURCES = ["csrc/hmm_kernel.c", "csrc/hmm_batch.c"]
KERNEL_HEADERS = ["csrc/hmm_kernel.h", "csrc/hmm_batch.h", "csrc/hmm_batch_impl.h", "csrc/hmm_batch_lanes.h"]
FLAGS = ["-O3", "-fopenmp", *arch]

extension = Extension(
    "hmmop._kernel",
    sources=["hmmop/_kernel.pyx", *KERNEL_SOURCES, "csrc/hmm_gauss.c", "csrc/hmm_em.c", "csrc/hmm_mix.c",
             "csrc/hmm_many.c"],
    depends=[*KERNEL_HEADERS, "csrc/hmm_gauss.h", "csrc/hmm_em.h", "csrc/hmm_mix.h", "csrc/hmm_many.h"],
    include_dirs=["csrc"],
    extra_compile_args=FLAGS,
    extra_link_args=["-fopenmp"],
)

NATIVE = "hmmop.libhmmop_op"        # built as hmmop/libhmmop_op.so, not a Python module


def mxnet_dir():
    """The installed mxnet package's directory, found without importing it."""
    spec = importlib.util.find_spec("mxnet")
    if spec is None or not spec.submodule_search_locations:
        return None
    return list(spec.submodule_search_locations)[0]


def native_extension():
    """The native operator library, or None where mxnet's lib_api is not installed."""
    root = mxnet_dir()
    header = root and os.path.join(root, "include", "mxnet", "lib_api.h")
    source = root and os.path.join(root, "src", "lib_api.cc")
    if not (root and os.path.isfile(header) and os.path.isfile(source)):
        print("hmmop: mxnet's include/mxnet/lib_api.h and src/lib_api.cc not found; "
              "building without the native operator (hmmop will use its CustomOp)", file=sys.stderr)
        return None
    return Extension(
        NATIVE,
        sources=["csrc/hmm_op.cc", *KERNEL_SOURCES, "csrc/hmm_many.c", source],
        depends=[*KERNEL_HEADERS, "csrc/hmm_many.h", header],
        include_dirs=["csrc", os.path.join(root, "include")],
        language="c++",
        # The kernel's flags; -ffp-contract=fast states the GNU modes' default (trap: -std=c++11).
        extra_compile_args=[*FLAGS, "-ffp-contract=fast"],
        extra_link_args=["-fopenmp"],
    )


class build_ext_native(build_ext):
    """Names the operator library libhmmop_op.so (mx.library.load wants a .so, and it is
    not a Python module: no PyInit, no Python ABI tag)."""

    def finalize_options(self):
        super().finalize_options()
        if self.parallel is None:       # the Cython module and the library compile side by side
            self.parallel = True

    def get_ext_filename(self, fullname):
        # distutils asks with the full name or with its last part alone
        if fullname in (NATIVE, NATIVE.split(".")[-1]):
            return os.path.join(*fullname.split(".")) + ".so"
        return super().get_ext_filename(fullname)

    def get_export_symbols(self, ext):
        return [] if ext.name == NATIVE else super().get_export_symbols(ext)


native = native_extension()

# The metadata (name, version, dependencies, extras, the `hmmop` script, the packages) is in
# pyproject.toml's [project] table; setup.py adds only what a table cannot say: the two compiled parts.
setup(
    cmdclass={"build_py": build_py_with_pth, "build_ext": build_ext_native},
    ext_modules=cythonize([extension], compiler_directives={"language_level": "3"}) + ([native] if native else []),
)
