"""The N2G stages, in the order a neuron's graph is made: one module each.

- ``scan``: every neuron's top corpus windows and statistics (``scan_pass``: the one pass over
  the corpus that finds them).
- ``examples``: a neuron's top windows split into train and test, and the train tokens that
  become examples.
- ``prune``: each example cut to the shortest context that keeps the neuron firing.
- ``saliency``: how much the pivot's activation depends on each token of a snippet.
- ``augment``: variants of a snippet with an important token substituted, measured in turn.
- ``calibration``: what the fit judges paths on beyond the snippets (random windows, the token
  probe, the repeated-sequence probe), measured once a layer.
- ``fit``: the graph (a trie of paths) from the snippets.
- ``evaluate``: the graph and the paper's baselines scored on held-out windows.
- ``build``: the stages in order for a batch of neurons of one layer, into a store.

The ordinary-text method of issue 28, measured on held-out documents but not yet the build's
default (``benchmarks/heldout.py``):

- ``heldout``: graphs and the token-lookup floor scored on every token of the held-out documents
  (``builder.corpus``'s document split) and on the interval protocol.
- ``corpus_calibration``: each path's END from its matches over a sample of the build split,
  token and bigram paths chosen by the variance they explain, a default value.
- ``intervals``: pivots drawn from every activation interval, beside the top windows.
- ``ordinary``: the two in the build (``n2g build --ordinary``: one pass a layer, each graph
  calibrated and scored on held-out text) and stored graphs scored there (``n2g eval --heldout``).
"""
