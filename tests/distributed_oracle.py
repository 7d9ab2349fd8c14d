"""The rule model of ``tests/oracle.py``, with a gate that holds one Ray worker mid-unit.

The killed-worker test needs a worker that is certainly in the middle of a unit, with part of it
done, when it is killed, whatever the timing. While ``<gate>/armed`` exists, the first worker
to start a forward pass after its shard holds a graph claims ``<gate>/held`` (writing its
process id there) and waits inside that pass until it is killed; every other worker passes. With
one neuron a batch, that worker has finished a batch of its unit and not the next.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import torch

from builder.models import LoadedModel
from tests.oracle import RuleBridge, rule_model


class GatedBridge(RuleBridge):
    """The rule bridge, holding one chosen forward pass (see the module docstring)."""

    def __init__(self, base: RuleBridge, gate: Path, shards: Path) -> None:
        self.__dict__.update(base.__dict__)
        self.gate, self.shards = gate, shards

    def _has_written(self) -> bool:
        return any(len(shard.read_bytes().splitlines()) >= 2  # the header, then a graph
                   for shard in self.shards.glob(f"*-{os.getpid()}.jsonl"))

    def _hold(self) -> None:
        armed = self.gate / "armed"
        if not armed.exists() or not self._has_written():
            return
        try:
            fd = os.open(self.gate / "held", os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            return  # another worker is the one held
        os.write(fd, str(os.getpid()).encode())
        os.close(fd)
        while armed.exists():  # until killed; disarming lets a failing test end
            time.sleep(0.05)

    def run_with_hooks(self, ids: torch.Tensor, fwd_hooks, stop_at_layer: int | None = None, **kw):
        self._hold()
        return super().run_with_hooks(ids, fwd_hooks, stop_at_layer, **kw)


def gated_rule_model(gate: str, shards: str) -> LoadedModel:
    """The rule model, its forward passes behind the gate in folder ``gate``."""
    model = rule_model()
    model.bridge = GatedBridge(model.bridge, Path(gate), Path(shards))
    return model
