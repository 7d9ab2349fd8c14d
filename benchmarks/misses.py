"""Where a store's graphs miss: test firings split by what the train windows show of their token.

    python benchmarks/misses.py [--store stores/smollm2-135m.jsonl.gz] [--layers 0,1,5,10,15]

For each stored graph, its test windows (the paper's split, as the build made it) are read from
the scan, and every test token that fires is put in one of three classes by what the neuron's
train windows show of that token (tokens compared as strings):

- *fires in train*: the token fires somewhere in the train windows, so the token lookup, which
  predicts a token's largest train activation, predicts it firing;
- *seen, never fires*: the token occurs in the train windows but never fires there;
- *unseen*: the token does not occur in the train windows.

The table gives, per layer, each class's share of the test firings and the graph's recall on it.
The token lookup's recall is 1 on the first class and 0 on the others by construction, so a
graph can only beat it on those through context-free knowledge (the token probe, folded matching)
or context it has seen. No forward pass where the scan is cached; otherwise the scan's traces are
measured again.
"""

from __future__ import annotations

import argparse
from collections import Counter

CLASSES = ("fires in train", "seen, never fires", "unseen")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--store", default="stores/smollm2-135m.jsonl.gz")
    parser.add_argument("--layers", default="0,1,5,10,15")
    args = parser.parse_args()

    from builder.config import BuildConfig
    from builder.corpus import make_windows
    from builder.models import load_model
    from builder.stages.build import top_windows
    from builder.stages.examples import split
    from builder.stages.scan import scan
    from store.jsonl import read_store
    from store.metrics import FIRING_THRESHOLD

    config = BuildConfig()
    model = load_model(args.model)
    store = read_store(args.store, (model.n_layers, model.d_mlp))
    windows = make_windows(model, None, config.scan.window, config.scan.max_tokens)
    vocab = model.vocab
    print("| layer | graphs | test firings | " + " | ".join(f"{c}: share | graph recall" for c in CLASSES)
          + " |")
    print("|" + " --- |" * (3 + 2 * len(CLASSES)))
    for layer in (int(x) for x in args.layers.split(",")):
        graphs = [g for g in store if g.layer == layer and g.fidelity is not None]
        if not graphs:
            continue
        layer_scan = scan(model, windows, [layer], config.scan,
                          neurons=[g.neuron for g in graphs])[layer]
        k = layer_scan.values.shape[0]
        firing, graph_hits = Counter(), Counter()
        for g in graphs:
            train, test = split(k, config.eval, config.seed, layer, g.neuron)
            train_windows = top_windows(vocab, windows, layer_scan, g.neuron, train)
            seen = {t for w in train_windows for t in w.tokens}
            fires = {t for w in train_windows
                     for t, a in zip(w.tokens, w.activations, strict=True) if a >= FIRING_THRESHOLD}
            for w in top_windows(vocab, windows, layer_scan, g.neuron, test):
                pred = g.predict(list(w.tokens))
                for t, a, p in zip(w.tokens, w.activations, pred, strict=True):
                    if a < FIRING_THRESHOLD:
                        continue
                    c = CLASSES[0] if t in fires else CLASSES[1] if t in seen else CLASSES[2]
                    firing[c] += 1
                    graph_hits[c] += p >= FIRING_THRESHOLD
        total = sum(firing.values())
        if not total:
            continue
        cells = [f"{firing[c] / total:.2f} | " + (f"{graph_hits[c] / firing[c]:.2f}" if firing[c] else "-")
                 for c in CLASSES]
        print(f"| {layer} | {len(graphs)} | {total:,} | " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
