"""What a recipe will cost, before anything runs.

The logic lives in deepwriter.pipeline.cost.
"""

import sys

from deepwriter.pipeline.cost import main

if __name__ == "__main__":
    sys.exit(main())
