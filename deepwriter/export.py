"""Export a run's data for others: `python -m deepwriter.export RUN_DIR [--out DIR] [--push-to-hub REPO_ID]`.

The logic lives in deepwriter.commands.export.
"""

import sys

from deepwriter.commands.export import main

if __name__ == "__main__":
    sys.exit(main())
