"""Entry point: `python -m deepwriter.serve --model PRESET --port P --python .venv-serve/bin/python`

The logic lives in deepwriter.commands.serve.
"""

import sys

from deepwriter.commands.serve import main

if __name__ == "__main__":
    sys.exit(main())
