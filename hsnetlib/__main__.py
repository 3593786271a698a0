"""``python -m hsnetlib {train,test,predict}``: see :mod:`hsnetlib.cli`."""
import sys

from hsnetlib.cli import main

if __name__ == "__main__":
    sys.exit(main())
