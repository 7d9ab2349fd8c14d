"""``python -m n2g_mcp.cli``: the ``n2g`` command."""

import sys

from n2g_mcp.cli import main

sys.exit(main())
