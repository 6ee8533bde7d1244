"""`python -m pipeline <command>`: the operator's commands beside the Luigi tasks."""

import sys

from pipeline.cli import main

sys.exit(main())
