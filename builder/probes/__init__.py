"""Probes of the whole model, beside the N2G stages: each asks the model one question.

- ``tokens``: every neuron of a layer on each token standing alone (early layers' calibration).
- ``firing``: which neurons fire at a token of a text, across layers.
- ``induction``: the repeated-sequence probe (neurons that respond to a copy).
- ``ablate``: the model's loss with neurons ablated, against a random control.
- ``steer``: greedy generation with neurons clamped.
- ``hypothesis``: a pattern scored against a neuron at corpus scale.

Their results are the torch-free types of ``store.probes``.
"""
