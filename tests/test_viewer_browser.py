"""The viewer in a real headless browser (Debian's ``chromium``, driven by its own command line)
against a uvicorn server on a free port, over the fake model (a known rule): the DOM after the
page's script ran, and screenshots of both pages. Few launches: each costs seconds.

Skipped, saying why, where no chromium is installed (``make setup`` installs it as root).
"""

from __future__ import annotations

import io
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import uvicorn
from PIL import Image

from n2g_mcp.queries import Queries
from n2g_mcp.viewer.app import viewer_app
from tests.fake_files import write_rule_files
from tests.fakes import FakeLiveBackend
from tests.test_viewer import spans

BROWSER = next((shutil.which(name) for name in ("chromium", "chromium-browser", "google-chrome")
                if shutil.which(name)), None)
pytestmark = pytest.mark.skipif(BROWSER is None, reason="no chromium to drive (make setup installs Debian's "
                                "chromium as root: apt-get install chromium)")
SIZE = (1000, 800)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A viewer over the small test store and the fake model's files, served on a free port."""
    from tests.conftest import small_store_graphs
    from store.jsonl import write_store

    stores = tmp_path_factory.mktemp("stores")
    write_store(stores / "test-model.jsonl.gz", "test-model", small_store_graphs())
    fake = FakeLiveBackend()
    write_rule_files(stores, fake)
    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(viewer_app(Queries(stores, fake, fake.served())), host="127.0.0.1",
                                           port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.started
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(10)


def chromium(*args: str, timeout: float = 90) -> str:
    done = subprocess.run([BROWSER, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                           "--no-first-run", "--disable-extensions", *args],
                          capture_output=True, text=True, timeout=timeout, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def screenshot(url: str, path: Path) -> Image.Image:
    chromium(f"--screenshot={path}", f"--window-size={SIZE[0]},{SIZE[1]}", url)
    return Image.open(io.BytesIO(path.read_bytes()))


def test_the_neuron_page_shows_the_graph_shaded_windows_and_runs_the_predict_box(base: str) -> None:
    act, ctx = FakeLiveBackend.rule(0, 1)  # the rule's words: ' dog' after ' apple'
    # virtual time lets the page's script post the ?text= to /api/predict and draw the answer
    dom = chromium("--virtual-time-budget=15000", "--dump-dom",
                   f"{base}/m/test-model/L0/N1?text=an{ctx}{act}")
    graph = dom[dom.index('class="graph"'):dom.index("Top activations")]
    assert f"␣{act.strip()}</text>" in graph and f"␣{ctx.strip()}</text>" in graph
    assert 'class="tok pivot"' in dom and 'data-act="1.000"' in dom
    answer = dom[dom.index('id="predict-out"'):]
    assert "graph predicts" in answer and "real neuron" in answer and "agreement" in answer
    # the real neuron fires fully on the activating word after its context word, and nowhere else
    real = spans(answer[answer.index("real neuron"):])
    assert [(text, a) for text, a, _ in real] == [("an", "0.000"), (ctx, "0.000"), (act, "1.000")]


@pytest.mark.parametrize("path", ["/m/test-model?activating=except", "/m/test-model/L0/N2"])
def test_screenshots_of_both_pages_are_pictures_of_the_window(base: str, path: str, tmp_path: Path) -> None:
    image = screenshot(base + path, tmp_path / "page.png")
    assert image.size == SIZE
    colours = image.convert("RGB").getcolors(maxcolors=1 << 20)
    assert colours is not None and len(colours) > 50  # text, tables, plots: not a blank page
    blue = sum(n for n, (r, g, b) in colours if b > 150 and r < 120)
    assert blue > 200  # the model page's plot boxes, the neuron page's context nodes
