"""Print every prompt the models of a recipe would see for one pair, rendered as each model reads it.

The logic lives in deepwriter.pipeline.prompt_preview.
"""

import sys

from deepwriter.pipeline.prompt_preview import main

if __name__ == "__main__":
    sys.exit(main())
