"""What a recipe will cost, before anything runs.

The logic lives in deepwriter.commands.plan.
"""

import sys

from deepwriter.commands.plan import main

if __name__ == "__main__":
    sys.exit(main())
