"""Graphs of the induction probe's top candidates, with and without repeat paths, scored on fresh
repeated text (issue 14, item 2).

    python benchmarks/repeat_graphs.py [--layers 0-29] [--top 20] [--seed 1000]

Picks the ``--top`` neurons of ``builder.probes.induction.induction_probe`` (its default probe,
seeds 0-2, ranked by rise) over ``--layers``, builds each one's graph once per variant from the shipped scan file
(``repeats`` off: the fit before repeat nodes; on: today's default; one run of prune and
saliency serves both), and scores every graph on *fresh* repeated random token sequences (the probe's
construction with another seed, so no sequence was seen when ranking): per neuron P/R/F1 on its
firing tokens (>= 0.5 of its corpus max) over both copies pooled, and the same for the token
lookup trained on the graph's own train windows (the paper's baseline: each token -> the
largest activation it had there). Beside them, each graph's own held-out F1 on the corpus (its
10 test top windows, and with 20 random windows as negatives), since repeat paths may cost
precision on natural text. Prints one markdown row per neuron and variant, and the means;
nothing is stored.

    python benchmarks/repeat_graphs.py --shipped

scores the shipped graphs of the same neurons instead, building none: the fitted atlas
(``stores/smollm2-135m.jsonl.gz``) against the served ones (the calibrated parts over it, issue 28).
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

import numpy as np

from builder.config import BuildConfig
from store.metrics import mean_defined, score

STORES = Path(__file__).resolve().parent.parent / "stores"


def _layers(text: str) -> list[int]:
    if "-" in text:
        lo, hi = text.split("-")
        return list(range(int(lo), int(hi) + 1))
    return [int(x) for x in text.split(",")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--layers", default="0-29")
    parser.add_argument("--top", type=int, default=20, help="probe candidates to build")
    parser.add_argument("--seed", type=int, default=1000, help="seed of the fresh test sequences")
    parser.add_argument("--sequences", type=int, default=24)
    parser.add_argument("--length", type=int, default=48)
    parser.add_argument("--shipped", action="store_true", help="score the shipped graphs, fitted and served")
    args = parser.parse_args()

    from builder.forward import run_layers
    from builder.models import load_model
    from builder.probes.induction import induction_probe, repeated_sequences
    from builder.run.runner import BuildSource
    from builder.stages.build import fit_batch, measure_batch, top_windows
    from builder.stages.evaluate import ngram_lookup
    from builder.stages.examples import split
    from store.scanfile import ScanFile, scan_filename
    from store.trie import REPEAT

    model = load_model("smollm2-135m")
    scan_file = ScanFile(STORES / scan_filename(model.name))
    layers = _layers(args.layers)
    maxima = {layer: scan_file.max_activation[layer] for layer in layers}
    ranked = induction_probe(model, layers, max_activation=maxima).scores[:args.top]
    rows = repeated_sequences(model, args.sequences, args.length, args.seed)  # (seq, 2 * length)
    acts = run_layers(model, rows.tolist(), sorted({r.layer for r in ranked}))
    texts = [[model.vocab[t] for t in row] for row in rows]
    if args.shipped:
        shipped(ranked, {layer: a.cpu().numpy() / maxima[layer] for layer, a in acts.items()}, texts)
        return
    base = BuildConfig()
    variants = {"without repeats": dataclasses.replace(base, fit=dataclasses.replace(base.fit, repeats=False)),
                "with repeats": base}
    source = BuildSource(model, base, scan_file=scan_file)

    print("| neuron | probe score | variant | paths | repeat paths | P | R | F1 | lookup F1 | "
          "corpus F1 | corpus F1 with negatives |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |", flush=True)
    results: dict[str, list[float | None]] = {name: [] for name in [*variants, "lookup"]}
    corpus: dict[str, list[float | None]] = {name: [] for name in variants}
    for layer in sorted({r.layer for r in ranked}):
        neurons = [r.neuron for r in ranked if r.layer == layer]
        layer_scan = source.layer_scans([layer], neurons)[layer]
        measured = measure_batch(model, layer, neurons, layer_scan, source.windows, base, None)
        truth = acts[layer].cpu().numpy() / maxima[layer]  # (seq, 2 * length, d_mlp)
        k = layer_scan.values.shape[0]
        for name, config in variants.items():
            for graph in fit_batch(model, layer, neurons, layer_scan, source.windows, config, measured):
                n = graph.neuron
                true = truth[:, :, n].ravel()
                pred = np.concatenate([graph.predict(t) for t in texts])
                s = score(true, pred)
                train = top_windows(model.vocab, source.windows, layer_scan, n,
                                    split(k, config.eval, config.seed, layer, n)[0])
                lookup = ngram_lookup(train, 1)
                lf1 = score(true, np.concatenate([lookup(t) for t in texts])).f1
                repeats = sum(REPEAT in path for path in graph.graph)
                probe = next(r.score for r in ranked if (r.layer, r.neuron) == (layer, n))
                # Undefined where the neuron never fires on the test text (store.metrics: layer
                # means skip it): no predictor can be right or wrong about its firing there.
                results[name].append(s.f1)
                if name == "with repeats":
                    results["lookup"].append(lf1)
                fidelity = graph.fidelity
                corpus[name].append(None if fidelity is None else fidelity.n2g.random.f1)
                cells = [s.precision, s.recall, s.f1, lf1,
                         None if fidelity is None else fidelity.n2g.top.f1, corpus[name][-1]]
                text = " | ".join("-" if v is None else f"{v:.2f}" for v in cells)
                print(f"| {graph.id} | {probe:.2f} | {name} | {len(graph.graph)} | {repeats} | {text} |",
                      flush=True)
    for name, values in results.items():
        defined = [v for v in values if v is not None]
        print(f"mean F1 on fresh repeated text, {name}: {mean_defined(values) or 0.0:.3f} over the "
              f"{len(defined)} of {len(values)} neurons that fire there")
    for name, values in corpus.items():
        print(f"mean corpus F1 with negatives, {name}: {mean_defined(values):.3f}")


def shipped(ranked, truth: dict[int, np.ndarray], texts: list[list[str]]) -> None:
    """The shipped graphs of the ranked neurons on the fresh repeated text (``truth``: normalised
    activations by layer, ``(seq, 2 * length, d_mlp)``): the fitted atlas's and the served ones."""
    import glob

    from store.jsonl import read_store
    from store.trie import REPEAT

    layers = {r.layer for r in ranked}
    fitted = read_store(STORES / "smollm2-135m.jsonl.gz", layers=layers).graphs
    served = dict(fitted)
    for part in sorted(glob.glob(str(STORES / "smollm2-135m.ordinary-L*.jsonl.gz"))):
        served.update(read_store(part, layers=layers).graphs)
    print("| neuron | probe score | graph | paths | repeat paths | P | R | F1 |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |", flush=True)
    results: dict[str, list[float | None]] = {"fitted": [], "served": []}
    for r in ranked:
        true = truth[r.layer][:, :, r.neuron].ravel()
        for name, graphs in (("fitted", fitted), ("served", served)):
            graph = graphs[(r.layer, r.neuron)]
            s = score(true, np.concatenate([graph.predict(t) for t in texts]))
            results[name].append(s.f1)
            kind = "calibrated" if graph.matching.rule == "specific" else "fitted"
            cells = " | ".join("-" if v is None else f"{v:.2f}" for v in (s.precision, s.recall, s.f1))
            print(f"| {graph.id} | {r.score:.2f} | {name} ({kind}) | {len(graph.graph)} | "
                  f"{sum(REPEAT in p for p in graph.graph)} | {cells} |", flush=True)
    for name, values in results.items():
        print(f"mean F1 on fresh repeated text, {name}: top 10 {mean_defined(values[:10]) or 0.0:.3f}, "
              f"top {len(values)} {mean_defined(values) or 0.0:.3f}")


if __name__ == "__main__":
    main()
