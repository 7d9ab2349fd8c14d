"""Corpora: the embedded default and the user's own files, read as documents."""

from __future__ import annotations

import gzip

import orjson
import pytest

from builder.corpus import DEFAULT_CORPUS, iter_texts, resolve_corpus
from store.errors import BadArgument


def test_embedded_corpus_mixes_prose_code_and_dialogue_over_two_million_characters() -> None:
    kinds: dict[str, int] = {}
    with gzip.open(DEFAULT_CORPUS, "rb") as f:
        for line in f:
            record = orjson.loads(line)
            kinds[record["kind"]] = kinds.get(record["kind"], 0) + len(record["text"])
    assert set(kinds) == {"prose", "code", "dialogue"}
    assert sum(kinds.values()) >= 2_000_000
    assert min(kinds.values()) >= 0.15 * sum(kinds.values())
    assert (DEFAULT_CORPUS.parent / "PROVENANCE.md").is_file()


def test_local_txt_jsonl_and_parquet_corpora_yield_their_texts(tmp_path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    (tmp_path / "a.txt").write_text("one document")
    (tmp_path / "b.jsonl").write_text('{"text": "first"}\n\n{"text": "second"}\n')
    pq.write_table(pa.table({"text": ["x", "y"]}), tmp_path / "c.parquet")
    assert list(iter_texts(tmp_path / "a.txt")) == ["one document"]
    assert list(iter_texts(tmp_path / "b.jsonl")) == ["first", "second"]
    assert list(iter_texts(tmp_path / "c.parquet")) == ["x", "y"]


@pytest.mark.parametrize("content, message", [
    ("not json\n", "not JSON"),
    ('{"title": "no text"}\n', "no string 'text' field"),
])
def test_bad_jsonl_records_name_the_line(tmp_path, content, message) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text(content)
    with pytest.raises(BadArgument, match=message):
        list(iter_texts(path))


def test_missing_files_are_refused_but_bare_names_go_to_the_hub(tmp_path) -> None:
    with pytest.raises(BadArgument, match="not found"):
        resolve_corpus(tmp_path / "missing.jsonl")
    assert resolve_corpus("wikitext") == "wikitext"
    assert resolve_corpus(None) == DEFAULT_CORPUS
