"""Compare eval results of several runs side by side.

The logic lives in deepwriter.commands.report.
"""

import sys

from deepwriter.commands.report import main

if __name__ == "__main__":
    sys.exit(main())
