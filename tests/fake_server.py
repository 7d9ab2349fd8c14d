"""``python -m tests.fake_server [n2g-mcp options]``: the real ``n2g-mcp`` command over the test
double of the live model (``tests/fakes.py``), for tests that need a server subprocess without a
model. The double is injected here, in test code; the shipped command has no such hook."""

import sys

from n2g_mcp.main import main
from tests.fakes import FakeLiveBackend

if __name__ == "__main__":
    fake = FakeLiveBackend()
    main(sys.argv[1:], live=fake, models=fake.served())
