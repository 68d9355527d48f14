"""`python -m gateway` is the `nanogpt-gateway` command."""

import sys

from gateway.cli import main

sys.exit(main())
