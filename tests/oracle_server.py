"""``python -m tests.oracle_server --stores DIR [n2g-mcp options]``: the real ``n2g-mcp`` command
serving the induction oracle (``tests/induction_oracle.py``) through the real live layer, with its
scan file written into ``DIR`` first, for tests that drive the probe tools in a subprocess."""

import sys
from pathlib import Path

from n2g_mcp.main import main
from tests.induction_oracle import oracle_backend, write_oracle_scan

if __name__ == "__main__":
    stores = Path(sys.argv[sys.argv.index("--stores") + 1])
    stores.mkdir(parents=True, exist_ok=True)
    write_oracle_scan(stores)
    backend, models = oracle_backend()
    main(sys.argv[1:], live=backend, models=models)
