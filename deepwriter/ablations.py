"""Run the paper's ablations and write the ablation table from those real runs.

The logic lives in deepwriter.pipeline.ablations.
"""

import sys

from deepwriter.pipeline.ablations import main

if __name__ == "__main__":
    sys.exit(main())
