"""``python -m edge_derain`` runs the ``edge-derain`` command line."""
import sys

from .cli import main

sys.exit(main())
