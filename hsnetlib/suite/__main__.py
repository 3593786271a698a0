"""``python -m hsnetlib.suite``: see :mod:`hsnetlib.suite.cli` (the modules load once, from the package)."""
import sys

from hsnetlib.suite.cli import main

sys.exit(main())
