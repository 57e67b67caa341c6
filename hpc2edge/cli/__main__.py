"""``python -m hpc2edge.cli``: the ``hpc2edge`` command without its console script."""

import sys

from hpc2edge.cli.root import main

sys.exit(main())
