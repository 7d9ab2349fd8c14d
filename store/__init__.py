"""Neuron graphs and their persistence, with no dependency on torch.

The store is the contract between the builder (which runs the language model) and the MCP server
(which only reads): `trie` holds the graph data model and its prediction, `graph` the versioned
record written one per line, `jsonl` reading and writing store files, `sqlindex` the persistent
index a server reads a directory of stores through, `catalog` that directory by model, `index`
and `similarity` in-memory search and neuron comparison, `render` Graphviz drawings, `metrics`
the fidelity figures, `names` neuron ids and ranges, `models` the models known by name,
`progress` how slow work reports.
"""
