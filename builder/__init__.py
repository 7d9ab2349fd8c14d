"""Everything that runs the language model: from corpus to stored neuron graphs.

The N2G stages, in order, one module each: ``scan`` (top-k corpus windows of every neuron in one
pass), ``prune``, ``saliency``, ``augment``, ``fit`` (the graph), ``evaluate`` (fidelity and
baselines); ``build`` runs them over many neurons at once into a store. ``models`` loads models,
``corpus`` reads corpora, ``forward`` batches forward passes, ``config`` holds every setting,
``live`` serves a loaded model to the MCP server.
"""
