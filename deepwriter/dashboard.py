"""The W&B dashboard of a deepwriter project: what to look at, per stage, across recipes.

The logic lives in deepwriter.commands.dashboard.
"""

import sys

from deepwriter.commands.dashboard import main

if __name__ == "__main__":
    sys.exit(main())
