"""The structured result of score_explanation: the scoring set, then its scores.

One model serves both steps (a tool has one ``outputSchema``): without predictions it carries
the set's windows as token lists and no scores; with predictions it carries the scores and the
worst-predicted windows, and no windows. Activations here are on the agent's 0-10 scale (the
neuron's normalised activation x 10) wherever they stand beside a prediction; the figures are
``store.metrics.Scores`` on the 0-1 scale (a prediction of 5 or more counts as firing).
"""

from __future__ import annotations

from pydantic import BaseModel, Field

from store.metrics import Rounded, Scores


class SetWindowView(BaseModel):
    number: int = Field(description="the window's place in the set, from 1: predictions follow this order")
    tokens: list[str] = Field(description="the window's tokens; predict one activation per token")


class KindScores(BaseModel):
    kind: str = Field(description="'all' (every window), 'top_and_random' (OpenAI's pooled score), or one "
                      "kind of window: 'top', 'interval', 'random', 'out_of_context'")
    windows: int
    explanation: Scores = Field(description="your predictions against the real activations: correlation "
                                "(the peers' score), and precision, recall, F1 on firing tokens (>= 5 of 10)")
    graph: Scores | None = Field(description="the stored graph's prediction on the same tokens; null without a graph")


class Miss(BaseModel):
    number: int = Field(description="the window's place in the set, from 1")
    kind: str = Field(description="what kind of window it was")
    text: str = Field(description="the window, the token missed most in [[ ]]")
    token: str
    position: int = Field(description="the token's index in the window")
    predicted: Rounded = Field(description="your prediction there, 0-10")
    actual: Rounded = Field(description="the real activation there, on the same 0-10 scale (normalised x 10)")
    graph: Rounded | None = Field(description="the graph's prediction there, 0-10; null without a graph")


class ScoreExplanationOutput(BaseModel):
    id: str
    model: str
    seed: int = Field(description="the seed that drew the set: the same seed draws the same set")
    set_id: str = Field(description="fingerprint of the set; pass it back with the predictions")
    explanation: str | None = Field(default=None, description="the explanation scored, as given")
    counts: dict[str, int] = Field(description="windows of each kind in the set (which window is which is "
                                   "told only with the scores)")
    empty_intervals: list[str] = Field(default_factory=list, description="activation intervals (share of "
                                       "the neuron's max) where no window was found")
    has_graph: bool = Field(description="whether a graph is stored, so that its prediction is scored beside yours")
    windows: list[SetWindowView] = Field(default_factory=list, description="without predictions: the set, "
                                         "shuffled; empty once scored")
    scores: list[KindScores] = Field(default_factory=list, description="with predictions: 'all' first, then "
                                     "'top_and_random', then each kind")
    window_kinds: list[str] = Field(default_factory=list, description="with predictions: each window's kind, "
                                    "in set order")
    worst: list[Miss] = Field(default_factory=list, description="with predictions: the windows predicted "
                              "worst (largest squared error), worst first")
