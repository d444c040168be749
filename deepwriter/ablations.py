"""Run the paper's ablations and write the ablation table from those real runs.

The logic lives in deepwriter.commands.ablations.
"""

import sys

from deepwriter.commands.ablations import main

if __name__ == "__main__":
    sys.exit(main())
