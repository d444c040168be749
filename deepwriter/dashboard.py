"""The W&B dashboard of a deepwriter project: what to look at, per stage, across recipes.

The logic lives in deepwriter.pipeline.dashboard.
"""

import sys

from deepwriter.pipeline.dashboard import main

if __name__ == "__main__":
    sys.exit(main())
