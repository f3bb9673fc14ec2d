"""``python -m lbtrain_trainer``: the same CLI as ``lbtrain trainer``, without the top-level CLI."""

import sys

from lbtrain_trainer.cli import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
