"""The viewer's pages and API over the fake model, whose neuron follows a known rule: what a page
shows must be what the tools answer, and the shading must be the rule's activations."""

from __future__ import annotations

import re
from html.parser import HTMLParser
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from n2g_mcp.auth import COOKIE, http_app
from n2g_mcp.queries import Queries
from n2g_mcp.server import create_server
from n2g_mcp.viewer.app import viewer_app, viewer_routes
from n2g_mcp.viewer.data import Window
from store.jsonl import write_store
from store.scanfile import ScanFile, scan_filename
from tests.fake_files import write_rule_files
from tests.fakes import MAX_ACTIVATION, FakeLiveBackend
from tests.graphs import make_graph


class Spans(HTMLParser):
    """Every shaded token span of a page: (text, data-act or None, is the pivot)."""

    def __init__(self) -> None:
        super().__init__()
        self.spans: list[tuple[str, str | None, bool]] = []
        self._open: tuple[str | None, bool] | None = None

    def handle_starttag(self, tag: str, attrs: list) -> None:
        a = dict(attrs)
        if tag == "span" and "tok" in (a.get("class") or "").split():
            self._open = (a.get("data-act"), "pivot" in a["class"].split())
            self.spans.append(("", *self._open))

    def handle_data(self, data: str) -> None:
        if self._open is not None:
            text, act, pivot = self.spans[-1]
            self.spans[-1] = (text + data, act, pivot)

    def handle_endtag(self, tag: str) -> None:
        if tag == "span":
            self._open = None


def spans(html: str) -> list[tuple[str, str | None, bool]]:
    parser = Spans()
    parser.feed(html)
    return parser.spans


class Unavailable(FakeLiveBackend):
    """The fake model, reported unable to run here."""

    def availability(self, spec):  # type: ignore[no-untyped-def]
        return "no torch here"


@pytest.fixture
def fake() -> FakeLiveBackend:
    return FakeLiveBackend()


def queries(stores_dir: Path, fake: FakeLiveBackend) -> Queries:
    write_rule_files(stores_dir, fake)
    return Queries(stores_dir, fake, fake.served(), viewer_url="http://viewer.test")


@pytest.fixture
def client(stores_dir: Path, fake: FakeLiveBackend) -> TestClient:
    return TestClient(viewer_app(queries(stores_dir, fake)))


def expected_windows(stores_dir: Path, fake: FakeLiveBackend, layer: int, neuron: int) -> list[Window]:
    scan = ScanFile(stores_dir / scan_filename("test-model"))
    return [Window.around(w.tokens, w.pivot, w.activation / MAX_ACTIVATION,
                          [a / MAX_ACTIVATION for a in fake.raw(layer, neuron, w.tokens)])
            for w in scan.top(layer, neuron, limit=12)]


def test_neuron_page_draws_the_graph_and_shades_every_token_by_the_real_neuron(client, stores_dir, fake) -> None:
    page = client.get("/m/test-model/L0/N1")
    assert page.status_code == 200
    act, ctx = fake.rule(0, 1)
    graph = page.text[page.text.index('<div class="graph">'):]
    assert f">␣{act.strip()}</text>" in graph and f">␣{ctx.strip()}</text>" in graph  # the SVG, visible spaces
    shown = spans(page.text)
    windows = expected_windows(stores_dir, fake, 0, 1)
    assert [float(a) for _, a, _ in shown] == pytest.approx([v for w in windows for v in w.shades], abs=1e-3)
    assert [p for _, _, p in shown] == [i == w.pivot for w in windows for i in range(len(w.tokens))]
    assert "window_activations" in fake.calls


def test_where_the_model_cannot_run_only_the_pivots_are_shaded(stores_dir) -> None:
    fake = Unavailable()
    page = TestClient(viewer_app(queries(stores_dir, fake))).get("/m/test-model/L0/N1")
    shown = spans(page.text)
    assert shown and all((a is not None) == pivot for _, a, pivot in shown)
    assert "no torch here" in page.text and "window_activations" not in fake.calls


def test_model_page_search_lists_what_search_graphs_finds(client, stores_dir, fake) -> None:
    page = client.get("/m/test-model", params={"activating": "except", "context": "everyone"})
    found = re.findall(r'href="/m/test-model/(L\d+/N\d+)"', page.text[page.text.index('id="results"'):
                                                                        page.text.index("Fidelity by layer")])
    q = queries(stores_dir, fake)
    assert found == [h.id for h in q.search(["except"], ["everyone"]).results] and found
    assert "F1 by layer" in page.text and "density by layer" in page.text


def test_predict_api_answers_as_predict_activations(client, stores_dir, fake) -> None:
    body = {"model": "test-model", "layer": 0, "neuron": 1, "text": "an apple dog", "compare": True}
    reply = client.post("/api/predict", json=body)
    assert reply.status_code == 200
    expected = queries(stores_dir, fake).predict("test-model", 0, 1, "an apple dog", compare=True)
    assert reply.json() == expected.model_dump(mode="json")
    assert reply.json()["actual"][-1] == 1.0  # the rule: ' dog' after ' apple'


@pytest.mark.parametrize(("body", "says"), [
    ({"layer": 0, "neuron": 1}, "send JSON with layer, neuron and text"),
    ({"layer": 0, "neuron": 1, "text": " "}, "text"),
    ({"layer": 0, "neuron": 40, "text": "a dog"}, "L0/N40"),
])
def test_predict_api_refuses_with_the_reason(client, body, says) -> None:
    reply = client.post("/api/predict", json=body)
    assert reply.status_code in (400, 404) and says in reply.json()["error"]


def test_a_neuron_without_a_graph_shows_its_scan_and_how_to_build_one(client) -> None:
    page = client.get("/m/test-model/L2/N40")
    assert page.status_code == 200 and "build_graph" in page.text and spans(page.text)
    assert client.get("/m/no-such-model").status_code == 404
    assert client.get("/m/test-model/L9/N0").status_code == 400


def test_pictures_are_served_as_svg_and_png(client) -> None:
    svg, png = client.get("/m/test-model/L0/N2.svg"), client.get("/m/test-model/L0/N2.png")
    assert svg.headers["content-type"].startswith("image/svg+xml") and "␣except" in svg.text
    assert png.headers["content-type"] == "image/png" and png.content.startswith(b"\x89PNG")


def test_tokens_are_escaped_everywhere(tmp_path, fake) -> None:
    stores = tmp_path / "s"
    stores.mkdir()
    write_store(stores / "test-model.jsonl.gz", "test-model",
                [make_graph([(("<script>alert(1)</script>", ' "x'), 0.9)], layer=0, neuron=2, f1=0.5)])
    page = TestClient(viewer_app(Queries(stores, fake, fake.served()))).get("/m/test-model/L0/N2")
    assert page.status_code == 200 and "<script>alert" not in page.text and "&lt;script&gt;alert" in page.text


def test_over_http_the_pages_take_the_token_once_as_a_cookie_but_mcp_does_not(stores_dir, fake) -> None:
    q = queries(stores_dir, fake)
    app = http_app(create_server(stores_dir, queries=q), token="s3cret", pages=viewer_routes(q))
    with TestClient(app) as client:
        assert client.get("/", headers={"accept": "text/html"}).status_code == 401
        assert client.get("/?token=wrong", headers={"accept": "text/html"}).status_code == 401
        first = client.get("/m/test-model?token=s3cret&activating=except", follow_redirects=False)
        assert first.status_code == 303 and first.headers["location"] == "/m/test-model?activating=except"
        assert f"{COOKIE}=s3cret" in first.headers["set-cookie"] and "HttpOnly" in first.headers["set-cookie"]
        assert client.get("/m/test-model/L0/N2").status_code == 200  # the cookie is kept
        assert client.post("/mcp", json={}).status_code == 401  # the cookie is not a token for /mcp


@pytest.mark.anyio
async def test_tools_about_one_neuron_link_to_its_page(stores_dir, fake) -> None:
    from mcp import Client

    server = create_server(stores_dir, live=fake, models=fake.served(), viewer_url="http://127.0.0.1:8000")
    async with Client(server) as c:
        graph = (await c.call_tool("get_graph", {"layer": 0, "neuron": 2})).structured_content
        hits = (await c.call_tool("search_graphs", {"activating": ["except"]})).structured_content["results"]
        built = (await c.call_tool("build_graph", {"layer": 0, "neuron": 2})).structured_content
    assert graph["viewer_url"] == "http://127.0.0.1:8000/m/test-model/L0/N2" == built["viewer_url"]
    assert hits and all(h["viewer_url"].endswith(f"/m/test-model/{h['id']}") for h in hits)


def test_the_neuron_pages_fidelity_shows_ordinary_text_beside_the_floor_where_stored() -> None:
    from n2g_mcp.viewer.pages import _ordinary
    from store.graph import HeldoutFidelity, HeldoutScores
    from tests.graphs import fidelity, scores

    plain = fidelity(0.5)
    assert _ordinary(plain) == ""  # graphs scored before the held-out split show no such table
    held = plain.model_copy(update={"heldout": HeldoutFidelity(
        n2g=HeldoutScores(tokens=scores(0.31), interval=scores(0.62)),
        floor=HeldoutScores(tokens=scores(0.13), interval=scores(0.44)))})
    html = _ordinary(held)
    assert "On ordinary text" in html and "token lookup (floor)" in html
    assert all(f"/ {v}, r" in html for v in ("0.31", "0.62", "0.13", "0.44"))
