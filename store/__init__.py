"""Neuron graphs and their persistence, with no dependency on torch.

The store is the contract between the builder (which runs the language model) and the MCP server
(which only reads): `trie` holds the graph data model and its prediction, `graph` the versioned
record written one per line, `jsonl` reading and writing store files, `sqlindex` the persistent
index a server reads a directory of stores through (`sqlfiles` how a file becomes its rows,
`sqlsearch` every query of it), `catalog` that directory by model, `similarity` the rules of
neuron comparison, `render` Graphviz drawings, `metrics` the fidelity figures and the rounding
of every result, `probes` the results of the whole-model probes, `scanfile` the model's
whole-corpus scan, `examples` a graph's examples, `lines` the one reader of store lines,
`tokens` matching keys, `names` neuron ids and ranges, `models` the models known by name,
`errors` the one family of errors, `pending` the one "already stored?" rule, `progress` how slow
work reports.
"""
