"""What a neuron does to the next-token prediction, measured, beside what its weights say.

The record of ``builder.probes.output`` (the ``output_effects`` tool): on the neuron's own top
corpus windows, the next-token distribution at the window's pivot intact, with the neuron zeroed
there, and with it raised there, each edit compared with the direct path's prediction
(``store/logitfile.py``). Torch-free, like ``store/probes.py``, so the server, the builder and the
test doubles share it.

Items are pydantic models rounded once when made; the whole result is a frozen pydantic model too,
since the tool returns it nearly as it is.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from store.logitfile import OutputTokens
from store.metrics import Rounded

EditKind = Literal["zeroed", "raised"]


class TokenShift(BaseModel):
    """One token's next-token probability at the pivot, intact and edited (means over the windows)."""

    model_config = ConfigDict(frozen=True)

    token: str
    prob_clean: Rounded = Field(description="mean probability of the token next, intact")
    prob_edited: Rounded = Field(description="mean probability with the neuron edited at the pivot")
    logprob_change: Rounded = Field(description="mean change of the token's log-probability (edited - intact)")
    direct: Rounded = Field(description="the direct path's logit change per unit of activation (from the "
                            "weights; times the activation change below, the direct path's prediction)")


class EditEffect(BaseModel):
    """What one edit of the neuron at the pivot did to the next-token prediction."""

    model_config = ConfigDict(frozen=True)

    kind: EditKind = Field(description="'zeroed' (set to 0) or 'raised' (set to scale x its corpus max)")
    value: Rounded = Field(description="the raw activation the neuron was set to at the pivot")
    activation_change: Rounded = Field(description="mean of (value - the neuron's own activation there)")
    kl: Rounded = Field(description="mean KL divergence (nats) of the edited next-token distribution from "
                        "the intact one")
    rose: list[TokenShift] = Field(description="tokens whose probability rose most, largest rise first")
    fell: list[TokenShift] = Field(description="tokens whose probability fell most, largest fall first")
    direct_correlation: Rounded | None = Field(
        description="correlation over the vocabulary between the measured log-probability change and "
        "the direct path's prediction (activation change x the weights' logit effect): near 1, the "
        "direct path is what the edit did; near 0, the neuron acts through later layers. Null where "
        "either is constant")
    direct_overlap: int = Field(description="how many of the k tokens the neuron's firing supports here "
                                "(raised: whose log-probability rose most; zeroed: fell most) are among the "
                                "direct path's k most promoted")


class OutputEffects(BaseModel):
    """The record of one neuron's measured output effects; see the module docstring."""

    model_config = ConfigDict(frozen=True)

    layer: int
    neuron: int
    windows: int = Field(description="top corpus windows measured on")
    activation_clean: Rounded = Field(description="mean raw activation of the neuron at the pivots, intact")
    static: OutputTokens = Field(description="the direct path's most promoted and suppressed tokens, from the weights")
    zeroed: EditEffect
    raised: EditEffect
