"""Print every prompt the models of a recipe would see for one pair, rendered as each model reads it.

The logic lives in deepwriter.commands.prompts.
"""

import os
import sys

if __name__ == "__main__":
    # The output is the prompts: no progress bars around them. Set here, before anything imports tqdm
    # (it reads TQDM_* once, when imported), and only for this command: an in-process caller keeps its
    # bars, and so do the processes it starts later.
    os.environ.setdefault("TQDM_DISABLE", "1")

from deepwriter.commands.prompts import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
