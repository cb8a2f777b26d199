"""``python -m ctxmix_lite.study``: the study from the command line (see ``--help``)."""
import sys

from .cli import main

sys.exit(main())
