"""Everything that runs the language model: from corpus to stored neuron graphs.

Shared by every room below, at the top:

- ``config``: every setting, one documented dataclass per stage (torch-free).
- ``models``: resolving and loading models (``LoadedModel``); the registry is ``store.models``.
- ``corpus``: corpora read into fixed-length token windows.
- ``tokenizer``: text to the token strings graphs hold, without torch.
- ``forward``: batched forward passes, stopping inside the layer asked for.
- ``prefix``: passes that continue one cached prefix (the saliency stage's masked copies).

The rooms:

- ``stages/``: the N2G stages in order, one module each (scan, examples, prune, saliency,
  augment, calibration, fit, evaluate) and ``build``, which runs them for a batch of neurons.
- ``probes/``: whole-model probes (the token probe, firing, induction, ablation, steering,
  hypothesis testing).
- ``run/``: the build runner, the live models the MCP server uses, and the build and scan
  spread over Ray.

Imports point down: ``run/`` -> ``stages/`` and ``probes/`` -> the shared modules -> ``store``
(between the two rooms, the build's calibration runs the token and induction probes, and the
hypothesis probe reads a layer's scan).
"""
