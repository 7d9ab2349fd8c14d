"""Graphs in words and predictions that say why: ``store.describe`` on graphs whose behaviour is
known, ``get_graph``'s description and ``search_graphs(words=...)`` through the MCP client, and
``predict_activations`` naming the path behind each firing token, for one text or several."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from n2g_mcp.limits import MAX_TEXT_CHARS, MAX_TEXTS
from n2g_mcp.server import create_server
from store.describe import EMPTY, describe, describe_graph
from store.graph import Matching
from store.trie import IGNORE, REPEAT, NeuronTrie
from tests.client import call, error, ok
from tests.conftest import EVERYONE
from tests.fakes import FakeLiveBackend
from tests.graphs import make_graph

pytestmark = pytest.mark.anyio


@pytest.fixture
def server(stores_dir: Path):
    fake = FakeLiveBackend()
    return create_server(stores_dir, live=fake, models=fake.served())


# --------------------------------------------------------------------- descriptions
def test_the_paper_neuron_reads_as_except_after_everyone_with_its_weaker_token_after() -> None:
    text = describe(make_graph(EVERYONE).graph)
    assert text.startswith("fires on ' except' after ' everyone'; ' but' after ' everyone'")
    assert "strongest on ' except' after ' everyone'" not in text  # it would say nothing new


def test_a_weak_token_is_named_after_also_and_the_strongest_path_is_spelled_in_text_order() -> None:
    graph = make_graph([((" import", " flask", "from"), 1.0), ((" import", "from"), 0.9), ((" importing",), 0.3)])
    text = describe(graph.graph)
    assert text == ("fires on ' import' after ' flask' or 'from'; also on ' importing'; "
                    "strongest on ' import' after 'from flask' (1.00)")


def test_tokens_without_context_read_together_and_many_are_counted() -> None:
    graph = make_graph([((f" w{i}",), 1.0 - i / 100) for i in range(12)])
    assert describe(graph.graph) == ("fires on ' w0', ' w1' and ' w2' in any context; also on ' w3', ' w4', "
                                     "' w5', ' w6', ' w7', ' w8' (+3 more)")


def test_repeat_nodes_read_as_what_they_match() -> None:
    trie = NeuronTrie()
    trie.insert((REPEAT,), 1.0)
    assert describe(trie) == "fires on any token seen earlier in the text"
    trie = NeuronTrie()
    trie.insert((" b", REPEAT), 0.9, [0.8])
    assert describe(trie) == "fires on ' b' after a repeat of earlier text"


def test_an_empty_or_unexplained_graph_says_so() -> None:
    assert describe(NeuronTrie()) == EMPTY
    graph = make_graph([((" a",), 0.1)])
    graph.unexplained = True
    assert describe_graph(graph).startswith("unexplained:")
    normalized = make_graph(EVERYONE, matching=Matching(normalized=True))
    assert describe_graph(normalized).endswith("(tokens matched case- and space-insensitively)")


def test_a_description_is_the_same_after_the_graph_is_stored_and_read_again() -> None:
    rng = random.Random(0)
    words = [" a", " b", " c", " d", "e", IGNORE]
    for _ in range(30):
        trie = NeuronTrie()
        for _ in range(rng.randint(1, 8)):
            path = [rng.choice(words[:-1])] + [rng.choice(words) for _ in range(rng.randint(0, 3))]
            while path[-1] is IGNORE:
                path.pop()
            trie.insert(path, round(rng.random(), 2), [round(rng.random(), 2) for _ in path[1:]])
        assert describe(NeuronTrie.from_rows(trie.to_rows())) == describe(trie)


async def test_get_graph_and_build_graph_carry_the_description(server) -> None:
    out = await ok(server, "get_graph", layer=0, neuron=1)  # the fake's rule: ' dog' after ' apple'
    assert out["description"] == ("fires on ' dog' after ' apple' (0.25 without it); "
                                  "strongest on ' dog' after ' apple…' (1.00)")
    built = await ok(server, "build_graph", layer=0, neuron=1)
    assert built["description"] == out["description"]


async def test_search_by_words_finds_graphs_naming_them_in_either_role(server) -> None:
    found = await ok(server, "search_graphs", words=["everyone"])  # a context token
    assert {h["id"] for h in found["results"]} == {"L0/N2", "L0/N3"}
    found = await ok(server, "search_graphs", words="Except everyone")  # split, any case
    assert {h["id"] for h in found["results"]} == {"L0/N2", "L0/N3"}
    found = await ok(server, "search_graphs", words=["harry", "potter"])  # activating and context
    assert [h["id"] for h in found["results"]] == ["L1/N4"]
    assert (await ok(server, "search_graphs", words=["fires"]))["total"] == 0  # not a token of any graph


# --------------------------------------------------------------------- why a prediction fired
def test_explain_gives_predict_s_values_and_a_path_that_matches() -> None:
    rng = random.Random(1)
    vocab = [" a", " b", " c", " d"]
    for _ in range(40):
        trie = NeuronTrie()
        for _ in range(rng.randint(1, 6)):
            path = [rng.choice(vocab)] + [rng.choice(vocab + [IGNORE]) for _ in range(rng.randint(0, 3))]
            while path[-1] is IGNORE:
                path.pop()
            trie.insert(path, round(rng.random(), 2), [0.5] * (len(path) - 1))
        text = [rng.choice(vocab) for _ in range(12)]
        for rule in ("all", "greedy"):
            explained = trie.explain(text, rule=rule)
            assert [v for v, _ in explained] == trie.predict(text, rule=rule)
            for i, (value, path) in enumerate(explained):
                if path is None:
                    assert value == 0.0
                    continue
                assert trie[path] == value and len(path) <= i + 1
                assert all(t is IGNORE or t == text[i - k] for k, t in enumerate(path)), (path, text, i)


async def test_each_firing_token_names_the_path_that_matched_it(server) -> None:
    out = await ok(server, "predict_activations", layer=0, neuron=2, text="We everyone else except me")
    row = next(r for r in out["firing"] if r["token"] == " except")
    assert row["path"] == [" everyone", None, " except"] and row["predicted"] == 0.8


async def test_several_texts_come_back_one_result_each_with_the_agreement_over_all(server) -> None:
    texts = ["an apple dog", "a dog alone", "no animals here"]  # the fake's L0/N1: ' dog' after ' apple'
    out = await ok(server, "predict_activations", layer=0, neuron=1, text=texts, compare=True)
    assert len(out["results"]) == 3 and out["tokens"] == [] and out["agreement"]["f1"] == 1.0
    first = out["results"][0]["firing"][0]
    assert first["token"] == " dog" and first["path"] == [" apple", " dog"] and first["actual"] == 1.0
    assert out["results"][2]["firing"] == []
    summary = (await call(server, "predict_activations", layer=0, neuron=1, text=texts)).content[0].text
    assert "Text 2" in summary and "via ' apple' ' dog'" in summary


async def test_too_many_or_too_long_texts_are_refused_saying_how_to_split_them(server) -> None:
    message = await error(server, "predict_activations", layer=0, neuron=1, text=["a dog"] * (MAX_TEXTS + 1))
    assert str(MAX_TEXTS) in message
    half = "dog " * (MAX_TEXT_CHARS // 8 + 10)
    message = await error(server, "predict_activations", layer=0, neuron=1, text=[half, half, half])
    assert "together" in message and "several calls" in message


# --------------------------------------------------------------------- the prompt
async def test_the_explain_prompt_reads_the_description_and_scores_the_explanation_with_real_tools(server) -> None:
    import re

    from mcp import Client

    async with Client(server) as client:
        tools = {t.name for t in (await client.list_tools()).tools}
        rendered = await client.get_prompt("explain-neuron", {"layer": "3", "neuron": "17"})
    text = rendered.messages[0].content.text
    named = set(re.findall(r"`(\w+)\(", text))
    assert {"get_graph", "score_explanation", "predict_activations"} <= named <= tools
    assert "description" in text and "L3/N17" in text and "{" not in text
