"""The queries that probe the whole live model: find_neurons, find_induction_neurons,
ablate_neurons, steer_neurons, test_hypothesis.

They answer for any neuron, graph or not; each hit says whether a graph is stored for it (from
the index, without loading it). All are slow: the server calls them from a worker thread.
"""

from __future__ import annotations

import math
import threading
import time
from typing import Any

from n2g_mcp import text
from n2g_mcp.limits import (
    ASSUMED_TOKENS_PER_S,
    CHARS_PER_TOKEN,
    FOUND_NEURONS,
    HIT_TOKENS,
    INDUCTION_NEURONS,
    MAX_ABLATE,
    MAX_COMPARE_TOKENS,
    MAX_CONTROLS,
    MAX_EACH,
    MAX_NEW_TOKENS,
    MAX_PATTERN_CHARS,
    MAX_SEED,
    MAX_SEEDS,
    MAX_STEER,
    MAX_STEER_PROMPT_TOKENS,
    MAX_STEER_SCALE,
    NEW_TOKENS,
    STEER_SCALE,
)
from n2g_mcp.outputs import (
    AblationOutput,
    FindHit,
    FindNeuronsOutput,
    HypothesisOutput,
    InductionHit,
    InductionOutput,
    SteerOutput,
)
from n2g_mcp.resolve import Resolver
from store.errors import BadArgument
from store.models import ModelSpec
from store.names import keyed_id, parse_neuron_id
from store.probes import (
    CONTROL_DRAWS,
    NIL_EFFECT,
    PROBE_LENGTH,
    PROBE_SEEDS,
    PROBE_SEQUENCES,
    AblationMode,
    PatternKind,
    named,
)
from store.progress import Progress
from store.tokens import normalize


class ProbeQueries(Resolver):
    """find_neurons, find_induction_neurons, ablate_neurons, steer_neurons and test_hypothesis."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.induction_runs: dict[str, InductionOutput] = {}
        """Each model's last find_induction_neurons answer (the viewer shows a neuron's place in it)."""

    def _probe_spec(self, model: str, doing: str) -> ModelSpec:
        return self.spec(model, doing, text.INSTEAD_OF_PROBING)

    def _encode(self, spec: ModelSpec, value: str, tool: str) -> tuple[list[int], list[str]]:
        """A text's ids and tokens, refused where it has none or more than one call runs (the
        tokenizer only: once the model is loaded, this does not wait for another call's model work)."""
        ids, strings = self.live.encode(spec, value)
        if not ids:
            raise BadArgument(text.NO_TOKENS)
        if len(ids) > MAX_COMPARE_TOKENS:
            raise BadArgument(text.too_many_tokens(len(ids), MAX_COMPARE_TOKENS, tool))
        return ids, strings

    @staticmethod
    def _check_seed(seed: int) -> None:
        if not 0 <= seed <= MAX_SEED:
            raise BadArgument(text.outside("seed", seed, 0, MAX_SEED, text.SEED_MEANING))

    def find_neurons(self, model: str | None, value: str, token: str | None = None, position: int | None = None,
                     layers: list[int] | None = None, limit: int = FOUND_NEURONS) -> FindNeuronsOutput:
        """The neurons that fire most at one token of a text, over all requested layers."""
        model = self.model(model)
        spec = self._probe_spec(model, "run the model")
        self.check_text(value, "find_neurons")
        layers = self.layers(model, layers)
        scan = self.need_scan(model, "find_neurons")
        ids, strings = self._encode(spec, value, "find_neurons")
        if token is not None:
            matches = [i for i, t in enumerate(strings) if t == token] or \
                      [i for i, t in enumerate(strings) if normalize(t) == normalize(token)]
            if not matches:
                raise BadArgument(text.no_such_token(token, strings))
            at = matches[-1]
        else:
            at = -1 if position is None else position
            if not -len(ids) <= at < len(ids):
                raise BadArgument(text.position_outside(at, len(ids)))
            at %= len(ids)
        maxes = {layer: scan.max_activation[layer] for layer in layers}
        results = []
        found = self.live.neurons_at(spec, ids, at, layers, maxes, limit)
        graphs = self.hits(model, [(h.layer, h.neuron) for h in found])
        for h in found:
            stored = graphs.get((h.layer, h.neuron))
            results.append(FindHit(**named(model, h), has_graph=stored is not None,
                                   activating_tokens=[] if stored is None else stored.activating_tokens[:HIT_TOKENS],
                                   activating_total=0 if stored is None else len(stored.activating_tokens),
                                   f1=None if stored is None else stored.f1))
        return FindNeuronsOutput(model=model, token=strings[at], position=at, tokens=len(ids), layers=layers,
                                 results=results)

    def find_induction(self, model: str | None, layers: list[int] | None = None, limit: int = INDUCTION_NEURONS,
                       sequences: int = PROBE_SEQUENCES, length: int = PROBE_LENGTH, seed: int = PROBE_SEEDS[0],
                       runs: int = len(PROBE_SEEDS),
                       cancel: threading.Event | None = None) -> InductionOutput:
        """Neurons more active on the second copy of repeated random token sequences than on the
        first, ranked by their rise (``builder.probes.induction``), merged over the
        seeds ``seed .. seed + runs - 1``, with the model's own loss on each copy."""
        model = self.model(model)
        spec = self._probe_spec(model, "run the induction probe")
        layers = self.layers(model, layers)
        if not 1 <= runs <= MAX_SEEDS:
            raise BadArgument(text.outside("runs", runs, 1, MAX_SEEDS, text.RUNS_MEANING))
        self._check_seed(seed)
        scan = self.scan_file(model)
        maxes = None if scan is None else {layer: scan.max_activation[layer] for layer in layers}
        seeds = list(range(seed, seed + runs))
        started = time.perf_counter()
        probe = self.live.induction(spec, layers, sequences, length, seeds, maxes, cancel)
        seconds = time.perf_counter() - started
        graphs = self.hits(model, [(r.layer, r.neuron) for r in probe.scores[:limit]])
        results = [InductionHit(**named(model, r), has_graph=(r.layer, r.neuron) in graphs)
                   for r in probe.scores[:limit]]
        out = InductionOutput(model=model, layers=layers, sequences=sequences, length=length, seed=seed,
                              seeds=probe.seeds, token_ids=text.PROBE_TOKEN_IDS,
                              loss_first_copy=probe.loss_first, loss_second_copy=probe.loss_second,
                              threshold_source=text.threshold_source(scan is not None),
                              results=results, seconds=seconds)
        self.induction_runs[model] = out
        return out

    def neuron_pairs(self, model: str, neurons: list[str], limit: int, tool: str) -> list[tuple[int, int]]:
        """``(layer, neuron)`` pairs of neuron ids, unique, in the order given; each id checked against the model.

        Raises:
            BadArgument: for none, more than ``limit``, ids not written ``L17/N938``, or out of range.
        """
        if not neurons:
            raise BadArgument(text.NO_NEURONS)
        if len(neurons) > limit:
            raise BadArgument(text.too_many_neurons(len(neurons), limit, tool))
        pairs, bad = [], []
        for item in neurons:
            try:
                pairs.append(parse_neuron_id(item))
            except ValueError:
                bad.append(item)
        if bad:
            raise BadArgument(text.bad_neuron_ids(bad))
        for layer, n in pairs:
            self.check_range(model, layer, n)
        return list(dict.fromkeys(pairs))  # the caller's order: a ranking's candidates come ranked

    def ablate(self, model: str | None, neurons: list[str], value: str | None = None,
               mode: AblationMode = "zero", control: bool = True, seed: int = PROBE_SEEDS[0],
               each: bool = False, controls: int = CONTROL_DRAWS, progress: Progress | None = None,
               cancel: threading.Event | None = None) -> AblationOutput:
        """The model's next-token loss with neurons ablated, against ``controls`` random draws of
        as many neurons of the same layers (none without ``control``); with ``each``, every
        neuron's own effect (at most :data:`MAX_EACH` neurons). Every argument is checked before
        the model is taken; before the passes run, ``progress`` hears how long they should take,
        and ``cancel`` stops them (and frees the model)."""
        model = self.model(model)
        spec = self._probe_spec(model, "ablate neurons")
        pairs = self.neuron_pairs(model, neurons, MAX_ABLATE, "ablate_neurons")
        if each and len(pairs) > MAX_EACH:
            raise BadArgument(text.too_many_each(len(pairs), MAX_EACH))
        if not 1 <= controls <= MAX_CONTROLS:
            raise BadArgument(text.outside("controls", controls, 1, MAX_CONTROLS, text.CONTROLS_MEANING))
        draws = controls if control else 0
        self._check_seed(seed)
        text_tokens = None
        if value is not None:
            self.check_text(value, "ablate_neurons")
            text_tokens = len(self._encode(spec, value, "ablate_neurons")[0])
            if text_tokens < 2:
                raise BadArgument(text.TWO_TOKENS)
        means = None
        if mode == "mean":
            scan = self.scan_file(model)
            means = None if scan is None else {layer: scan.mean[layer] for layer, _ in pairs}
        if text_tokens is not None and progress is not None:
            # The count, now the tokenizer has read the text (the first message guessed it).
            progress(0, 1, self._ablation_estimate(model, len(pairs), draws, each, text_tokens))
        r = self.live.ablate(spec, pairs, value, mode, draws, means, seed, each, cancel=cancel)
        if r.seconds > 0 and r.tokens_run:
            self.rates[model] = r.tokens_run / r.seconds
        return AblationOutput(
            model=model, neurons=[keyed_id(model, *p) for p in r.neurons], mode=mode,
            measured_on=text.measured_on(value is not None), seed=None if value is not None else seed,
            tokens_measured=r.tokens_measured, loss_clean=r.loss_clean, loss_first_copy=r.loss_first_copy,
            loss_ablated=r.loss_ablated, delta=r.delta,
            control_draws=len(r.control_deltas), control_neurons=[keyed_id(model, *p) for p in r.control_neurons],
            control_delta=r.control_delta, control_spread=r.control_spread, control_deltas=r.control_deltas,
            rank_among_controls=r.rank, each=[e.model_copy(update=named(model, e)) for e in r.each],
            no_effect=[keyed_id(model, e.layer, e.neuron) for e in r.each if e.delta <= NIL_EFFECT],
            copies=r.copies, top_changes=r.top_changes, seconds=r.seconds)

    def ablate_estimate(self, model: str | None, neurons: list[str], value: str | None, control: bool = True,
                        controls: int = CONTROL_DRAWS, each: bool = False) -> str:
        """How long ablate_neurons should take, for its first progress message: for a text, from
        its length (:data:`CHARS_PER_TOKEN`) until the model has read it (``ablate`` reports the
        count then).

        Raises:
            BadArgument: for neuron ids :meth:`neuron_pairs` refuses (before any thread or model).
        """
        model = self.model(model)
        pairs = self.neuron_pairs(model, neurons, MAX_ABLATE, "ablate_neurons")
        guess = None if value is None else math.ceil(len(value) / CHARS_PER_TOKEN)
        return self._ablation_estimate(model, len(pairs), controls if control else 0, each, guess,
                                       counted=value is None)

    def _ablation_estimate(self, model: str, neurons: int, draws: int, each: bool, text_tokens: int | None,
                           counted: bool = True) -> str:
        """The expected duration of an ablation: its runs (intact, ablated, each control draw,
        each neuron alone) times the tokens of one run."""
        row_tokens = PROBE_SEQUENCES * (2 * PROBE_LENGTH + 1) if text_tokens is None else text_tokens + 1  # BOS
        runs = 2 + draws + (neurons if each else 0)
        return self._estimate(model, "ablate_neurons", runs, runs * row_tokens, counted)

    def induction_estimate(self, model: str | None, sequences: int = PROBE_SEQUENCES, length: int = PROBE_LENGTH,
                           runs: int = len(PROBE_SEEDS)) -> str:
        """How long find_induction_neurons should take, for its first progress message: a full pass
        over each seed's sequences (each copy after BOS)."""
        return self._estimate(self.model(model), "find_induction_neurons", runs, runs * sequences * (2 * length + 1))

    def _estimate(self, model: str, tool: str, runs: int, tokens: int, counted: bool = True) -> str:
        """A long call's expected duration: the tokens its passes forward at the model's measured
        rate (else the configured one)."""
        rate = self.rates.get(model)
        return text.expected_duration(tool, runs, tokens, tokens / (rate or ASSUMED_TOKENS_PER_S),
                                      measured=rate is not None, counted=counted)

    def steer(self, model: str | None, neurons: list[str], prompt: str, scale: float = STEER_SCALE,
              max_new_tokens: int = NEW_TOKENS, progress: Progress | None = None,
              cancel: threading.Event | None = None) -> SteerOutput:
        """Greedy continuations of a prompt, intact and with the neurons clamped to ``scale`` x
        their corpus max at every position (``builder.probes.steer``)."""
        model = self.model(model)
        spec = self._probe_spec(model, "steer neurons")
        pairs = self.neuron_pairs(model, neurons, MAX_STEER, "steer_neurons")
        if not 1 <= max_new_tokens <= MAX_NEW_TOKENS:
            raise BadArgument(text.outside("max_new_tokens", max_new_tokens, 1, MAX_NEW_TOKENS, "tokens to generate"))
        if not abs(scale) <= MAX_STEER_SCALE:  # also refuses NaN
            raise BadArgument(text.outside("scale", scale, -MAX_STEER_SCALE, MAX_STEER_SCALE, text.SCALE_MEANING))
        self.check_text(prompt, "steer_neurons")
        scan = self.need_scan(model, "steer_neurons")
        ids, _ = self.live.encode(spec, prompt)
        if not ids:
            raise BadArgument(text.NO_TOKENS)
        if len(ids) > MAX_STEER_PROMPT_TOKENS:
            raise BadArgument(text.too_many_prompt_tokens(len(ids), MAX_STEER_PROMPT_TOKENS))
        values = [scale * float(scan.max_activation[layer][n]) for layer, n in pairs]
        r = self.live.steer(spec, pairs, values, ids, max_new_tokens, progress=progress, cancel=cancel)
        first = next((i for i, (a, b) in enumerate(zip(r.clean_tokens, r.steered_tokens, strict=False))
                      if a != b), None)
        if first is None and len(r.clean_tokens) != len(r.steered_tokens):
            first = min(len(r.clean_tokens), len(r.steered_tokens))
        return SteerOutput(
            model=model, neurons=[keyed_id(model, *p) for p in r.neurons], scale=scale, values=r.values,
            prompt_tokens=r.prompt_tokens, max_new_tokens=max_new_tokens, clean_text=r.clean_text,
            steered_text=r.steered_text, clean_tokens=r.clean_tokens, steered_tokens=r.steered_tokens,
            first_difference=first, changes=r.changes)

    def hypothesis(self, model: str | None, layer: int, neuron: int, pattern: str,
                   kind: PatternKind = "regex", cancel: threading.Event | None = None) -> HypothesisOutput:
        """A pattern scored as the neuron's explanation on its top, random and matching windows;
        ``cancel`` stops it between chunks of the corpus and before the model's pass."""
        model = self.model(model)
        spec = self._probe_spec(model, "test a hypothesis")
        self.check_range(model, layer, neuron)
        if not pattern:
            raise BadArgument(text.bad_pattern(text.EMPTY_PATTERN))
        if len(pattern) > MAX_PATTERN_CHARS:
            raise BadArgument(text.bad_pattern(text.pattern_too_long(len(pattern), MAX_PATTERN_CHARS)))
        scan = self.need_scan(model, "test_hypothesis")
        try:
            r = self.live.hypothesis(spec, layer, neuron, pattern, kind, scan, cancel=cancel)
        except BadArgument as exc:
            raise BadArgument(text.bad_pattern(str(exc))) from None
        return HypothesisOutput(
            id=keyed_id(model, layer, neuron), model=model, pattern=pattern, kind=kind, overall=r.overall, sets=r.sets,
            corpus_windows_matched=r.corpus_windows_matched, false_positives=r.false_positives,
            false_negatives=r.false_negatives)
