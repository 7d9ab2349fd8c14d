"""The SQLite index's schema and its version: what ``store.sqlindex`` keeps of a stores directory.

An index whose ``PRAGMA user_version`` is not :data:`SCHEMA_VERSION` is dropped and made again
from the store files (it is a cache of them; see ``store/sqlindex.py``).
"""

SCHEMA_VERSION = 6
"""Version 2 keeps each file's scan reference (store format 2), each graph's activating tokens
with their activations, on each activating posting its share of the graph's strongest
activation (search ranks by it), and whether a file is indexed to its end (``complete``: indexing
in the background commits a file in slices). Version 3 keeps the text of a ``.gz`` store in
compressed blocks (``blocks``) rather than each line compressed alone, postings for every indexed
line (searches read the current ones), and each file's content hash (``digest``). Version 4
keeps one ``repeated`` level a graph (``store.tokens.repeat_level``: 2 a repeat path, 1 a token
repeated exactly, 0 neither) where 3 had a case-folded flag and an exact one, and checks lines as
``store.lines.check_line`` does now (trie rows, a positive max activation), so an index that
listed such lines is made again. Version 5 keeps, for a ``.gz`` store imported from its sidecar
(``store/sidecar.py``), the access points its lines are read through (``points``) in place of
its text. Version 6 keeps each graph's F1 and correlation on held-out documents
(``fidelity.heldout.n2g.tokens``: ``ordinary_f1``, ``ordinary_r``; null where not scored), which
search lists and filters by."""

INDEX_NAME = ".n2g-index.sqlite"
"""The index file's name, beside the stores it indexes."""

SCHEMA = """
CREATE TABLE files (
    id INTEGER PRIMARY KEY, name TEXT UNIQUE NOT NULL, model TEXT, size INTEGER, mtime_ns INTEGER,
    head TEXT, indexed_to INTEGER, tail TEXT, lines INTEGER, problem TEXT, scan TEXT,
    complete INTEGER NOT NULL DEFAULT 1, digest TEXT);
CREATE TABLE corrupt (file INTEGER NOT NULL, line INTEGER NOT NULL, reason TEXT NOT NULL);
CREATE INDEX corrupt_file ON corrupt(file, line);
CREATE TABLE graphs (
    id INTEGER PRIMARY KEY, file INTEGER NOT NULL, line INTEGER NOT NULL, model TEXT NOT NULL,
    layer INTEGER NOT NULL, neuron INTEGER NOT NULL, f1 REAL, rank REAL NOT NULL,
    current INTEGER NOT NULL DEFAULT 0, act TEXT NOT NULL, ctx TEXT NOT NULL,
    n_act INTEGER NOT NULL, n_ctx INTEGER NOT NULL, repeated INTEGER NOT NULL,
    offset INTEGER NOT NULL, length INTEGER NOT NULL, ordinary_f1 REAL, ordinary_r REAL);
CREATE INDEX graphs_file ON graphs(file, line);
CREATE INDEX graphs_neuron ON graphs(model, layer, neuron);
CREATE INDEX graphs_rank ON graphs(model, current, rank, layer, neuron);
CREATE TABLE postings (kind INTEGER NOT NULL, key TEXT NOT NULL, graph INTEGER NOT NULL,
    share REAL NOT NULL DEFAULT 0, PRIMARY KEY (kind, key, graph)) WITHOUT ROWID;
CREATE TABLE pairs (model TEXT NOT NULL, a INTEGER NOT NULL, b INTEGER NOT NULL,
    a_layer INTEGER, a_neuron INTEGER, b_layer INTEGER, b_neuron INTEGER,
    act REAL NOT NULL, ctx REAL NOT NULL, score REAL NOT NULL);
CREATE INDEX pairs_score ON pairs(model, score DESC, a_layer, a_neuron, b_layer, b_neuron);
CREATE INDEX pairs_a ON pairs(a);
CREATE INDEX pairs_b ON pairs(b);
CREATE TABLE models (model TEXT PRIMARY KEY, pairs_floor REAL);
CREATE TABLE blocks (file INTEGER NOT NULL, start INTEGER NOT NULL, data BLOB NOT NULL, PRIMARY KEY (file, start));
CREATE TABLE points (file INTEGER PRIMARY KEY, data BLOB NOT NULL);
"""
