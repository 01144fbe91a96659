"""python -m hmmop: the command line (see hmmop.cli)."""
import sys

from .cli import main

sys.exit(main())
