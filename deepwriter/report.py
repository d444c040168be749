"""Compare eval results of several runs side by side.

The logic lives in deepwriter.viewer.compare.
"""

import sys

from deepwriter.viewer.compare import main

if __name__ == "__main__":
    sys.exit(main())
