"""Entry point: `python -m deepwriter.serve --model PRESET --port P --python .venv-serve/bin/python`

The logic lives in deepwriter.llm.serving.
"""

import sys

from deepwriter.llm.serving import main

if __name__ == "__main__":
    sys.exit(main())
