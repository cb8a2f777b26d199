"""``python -m ctxmix_lite.study``: the study from the command line (see ``--help``)."""
import sys

from .core import main

sys.exit(main())
