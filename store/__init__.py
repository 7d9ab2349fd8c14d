"""Neuron graphs and their persistence, with no dependency on torch.

The store is the contract between the builder (which runs the language model) and the MCP server
(which only reads): `trie` holds the graph data model and its prediction, `graph` the versioned
record written one per line, `jsonl` reading and writing stores, `index` search, `similarity`
neuron comparison, `render` Graphviz DOT, `metrics` the fidelity figures.
"""
