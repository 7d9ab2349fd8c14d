"""What a build still has to make: the one rule for "already stored?".

A requested neuron is built unless a readable graph of it is stored already; ``rebuild`` builds
it again (the newer line wins when the store is read). The command line applies the rule to the
store it appends to (``builder.run.runner``), the server to every store of the model
(``n2g_mcp.live_queries``), so a neuron in the shipped ``.gz`` is not built again behind the
agent's back.
"""

from __future__ import annotations

from collections.abc import Container, Sequence


def pending(layers: Sequence[int], neurons: Sequence[int], stored: Container[tuple[int, int]],
            rebuild: bool = False) -> dict[int, list[int]]:
    """Per layer, the neurons to build, in the order asked (layers with none left are dropped).

    >>> pending([0, 1], [3, 4], {(0, 3), (1, 3), (1, 4)})
    {0: [4]}
    >>> pending([0], [3], {(0, 3)}, rebuild=True)
    {0: [3]}
    """
    todo = {layer: [n for n in neurons if rebuild or (layer, n) not in stored] for layer in layers}
    return {layer: todo[layer] for layer in layers if todo[layer]}
