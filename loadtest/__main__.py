"""`python -m loadtest`: the load generator's command line (see loadtest.cli)."""

import sys

from loadtest.cli import main

if __name__ == "__main__":
    sys.exit(main())
