"""``python -m edge_derain.cli``: the ``edge-derain`` command."""
import sys

from . import main

sys.exit(main())
