"""Build of hmmop: one Cython extension over the C kernel in csrc/, with OpenMP.

Compiler flags: -O3 -fopenmp, plus HMMOP_ARCH_FLAGS (default "-march=native",
since the package is compiled where it is installed; set it to "" or e.g.
"-march=x86-64-v3" to build a portable binary).
"""
import os
import shlex

from Cython.Build import cythonize
from setuptools import Extension, setup
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

extension = Extension(
    "hmmop._kernel",
    sources=["hmmop/_kernel.pyx", "csrc/hmm_kernel.c", "csrc/hmm_batch.c"],
    depends=["csrc/hmm_kernel.h", "csrc/hmm_batch.h", "csrc/hmm_batch_impl.h"],
    include_dirs=["csrc"],
    extra_compile_args=["-O3", "-fopenmp", *arch],
    extra_link_args=["-fopenmp"],
)

setup(
    name="hmmop",
    version="0.1.0",
    description="Fused hidden-Markov-model forward/backward operator for Apache MXNet",
    long_description=open("README.md", encoding="utf-8").read() if os.path.exists("README.md") else "",
    long_description_content_type="text/markdown",
    packages=["hmmop"],
    py_modules=["_hmmop_mxnet_hook"],
    cmdclass={"build_py": build_py_with_pth},
    python_requires=">=3.8,<3.14",
    # numpy < 2: MXNet 1.9.1 declares it (and uses names numpy 2 removed); numpy 1.24-1.26 lack only
    # np.bool, which _hmmop_mxnet_hook restores.  setuptools provides distutils, gone from 3.12 on.
    install_requires=["mxnet==1.9.1", "numpy>=1.21,<2", "tqdm>=4.60", "setuptools; python_version >= '3.12'"],
    extras_require={
        "plot": ["matplotlib>=3.5"],                  # hmmop's plots and the CLI's --plot options
        "bench": ["hmmlearn==0.3.3"],                 # `hmmop bench`'s comparison columns
        "test": ["pytest>=7", "pytest-benchmark>=4", "hmmlearn==0.3.3", "matplotlib>=3.5"],
    },
    entry_points={"console_scripts": ["hmmop = hmmop.cli:main"]},
    ext_modules=cythonize([extension], compiler_directives={"language_level": "3"}),
    zip_safe=False,
)
