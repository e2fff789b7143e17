"""python -m lookout: the operator's command."""

import sys

from .cli import main

sys.exit(main())
