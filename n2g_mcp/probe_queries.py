"""The queries that probe the whole live model: find_neurons, find_induction_neurons,
ablate_neurons, test_hypothesis.

They answer for any neuron, graph or not; each hit says whether a graph is stored for it (from
the index, without loading it). All are slow: the server calls them from a worker thread.
"""

from __future__ import annotations

import time

from n2g_mcp import text
from n2g_mcp.limits import HIT_TOKENS, MAX_ABLATE, MAX_COMPARE_TOKENS, MAX_PATTERN_CHARS
from n2g_mcp.outputs import (
    AblationOutput,
    Figures,
    FindHit,
    FindNeuronsOutput,
    HypothesisOutput,
    HypothesisSetView,
    InductionHit,
    InductionOutput,
    MarkedView,
    TokenChangeView,
)
from n2g_mcp.resolve import Resolver
from store.errors import BadArgument
from store.models import ModelSpec
from store.names import neuron_id, parse_neuron_id
from store.probes import AblationMode, PatternKind
from store.tokens import normalize


class ProbeQueries(Resolver):
    """find_neurons, find_induction_neurons, ablate_neurons and test_hypothesis."""

    def _probe_spec(self, model: str, doing: str) -> ModelSpec:
        return self.spec(model, doing, text.INSTEAD_OF_PROBING)

    def _encode(self, spec: ModelSpec, value: str) -> tuple[list[int], list[str]]:
        """A text's ids and tokens, refused where it has none or more than one call runs."""
        ids, strings = self.live.encode(spec, value)
        if not ids:
            raise BadArgument(text.NO_TOKENS)
        if len(ids) > MAX_COMPARE_TOKENS:
            raise BadArgument(text.too_many_tokens(len(ids), MAX_COMPARE_TOKENS))
        return ids, strings

    def find_neurons(self, model: str | None, value: str, token: str | None = None, position: int | None = None,
                     layers: list[int] | None = None, limit: int = 20) -> FindNeuronsOutput:
        """The neurons that fire most at one token of a text, over all requested layers."""
        model = self.model(model)
        self.check_text(value)
        layers = self.layers(model, layers)
        scan = self.need_scan(model, "find_neurons")
        spec = self._probe_spec(model, "run the model")
        ids, strings = self._encode(spec, value)
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
        for h in self.live.neurons_at(spec, ids, at, layers, maxes, limit):
            stored = self.hit(model, h.layer, h.neuron)
            results.append(FindHit(id=neuron_id(h.layer, h.neuron), layer=h.layer, neuron=h.neuron,
                                   activation=h.normalized, raw_activation=h.activation,
                                   has_graph=stored is not None,
                                   activating_tokens=[] if stored is None else stored.activating_tokens[:HIT_TOKENS],
                                   f1=None if stored is None else stored.f1))
        return FindNeuronsOutput(model=model, token=strings[at], position=at, tokens=len(ids), layers=layers,
                                 results=results)

    def find_induction(self, model: str | None, layers: list[int] | None = None, limit: int = 50,
                       sequences: int = 24, length: int = 48, seed: int = 0) -> InductionOutput:
        """Neurons that fire more on the second copy of repeated random sequences."""
        model = self.model(model)
        layers = self.layers(model, layers)
        spec = self._probe_spec(model, "run the induction probe")
        scan = self.scan_file(model)
        maxes = None if scan is None else {layer: scan.max_activation[layer] for layer in layers}
        started = time.perf_counter()
        scores = self.live.induction(spec, layers, sequences, length, seed, maxes)
        seconds = time.perf_counter() - started
        results = [InductionHit(id=neuron_id(r.layer, r.neuron), layer=r.layer, neuron=r.neuron,
                                score=r.score, first=r.first, second=r.second,
                                has_graph=self.hit(model, r.layer, r.neuron) is not None)
                   for r in scores[:limit]]
        return InductionOutput(model=model, layers=layers, sequences=sequences, length=length, seed=seed,
                               threshold_source=text.threshold_source(scan is not None),
                               results=results, seconds=seconds)

    def ablate(self, model: str | None, neurons: list[str], value: str | None = None,
               mode: AblationMode = "zero", control: bool = True) -> AblationOutput:
        """The model's next-token loss with neurons ablated, against a random control."""
        model = self.model(model)
        if not neurons:
            raise BadArgument(text.NO_NEURONS)
        if len(neurons) > MAX_ABLATE:
            raise BadArgument(text.too_many_neurons(len(neurons), MAX_ABLATE))
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
        pairs = sorted(set(pairs))
        if value is not None:
            self.check_text(value)
        means = None
        if mode == "mean":
            scan = self.scan_file(model)
            means = None if scan is None else {layer: scan.mean[layer] for layer, _ in pairs}
        spec = self._probe_spec(model, "ablate neurons")
        if value is not None:
            self._encode(spec, value)
        r = self.live.ablate(spec, pairs, value, mode, control, means)
        return AblationOutput(
            model=model, neurons=[neuron_id(*p) for p in r.neurons], mode=mode,
            measured_on=text.measured_on(value is not None), tokens_measured=r.tokens_measured,
            loss_clean=r.loss_clean, loss_ablated=r.loss_ablated, delta=r.delta,
            control_neurons=[neuron_id(*p) for p in r.control_neurons], control_delta=r.control_delta,
            top_changes=[TokenChangeView(position=c.position, token=c.token, loss_clean=c.loss_clean,
                                         loss_ablated=c.loss_ablated) for c in r.top_changes])

    def hypothesis(self, model: str | None, layer: int, neuron: int, pattern: str,
                   kind: PatternKind = "regex") -> HypothesisOutput:
        """A pattern scored as the neuron's explanation on its top, random and matching windows."""
        model = self.model(model)
        self.check_range(model, layer, neuron)
        if not pattern:
            raise BadArgument(text.bad_pattern(text.EMPTY_PATTERN))
        if len(pattern) > MAX_PATTERN_CHARS:
            raise BadArgument(text.bad_pattern(text.pattern_too_long(len(pattern), MAX_PATTERN_CHARS)))
        scan = self.need_scan(model, "test_hypothesis")
        spec = self._probe_spec(model, "test a hypothesis")
        try:
            r = self.live.hypothesis(spec, layer, neuron, pattern, kind, scan)
        except BadArgument as exc:
            raise BadArgument(text.bad_pattern(str(exc))) from None
        return HypothesisOutput(
            id=neuron_id(layer, neuron), model=model, pattern=pattern, kind=kind, overall=Figures.of(r.overall),
            sets=[HypothesisSetView(set=s.set, windows=s.windows, tokens=s.scores.tokens, firing=s.scores.firing,
                                    claimed=s.scores.predicted, figures=Figures.of(s.scores)) for s in r.sets],
            corpus_windows_matched=r.corpus_windows_matched,
            false_positives=[MarkedView.of(m) for m in r.false_positives],
            false_negatives=[MarkedView.of(m) for m in r.false_negatives])
