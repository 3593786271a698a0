"""``python -m hsnetlib.results``: see :mod:`hsnetlib.results.cli`."""
import sys

from hsnetlib.results.cli import main

sys.exit(main())
