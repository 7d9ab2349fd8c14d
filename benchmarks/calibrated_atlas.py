"""The calibrated atlas against the fitted one it was made from, layer by layer (issue 28).

    python benchmarks/calibrated_atlas.py [--model smollm2-135m] [--fitted stores/<model>.jsonl.gz]
                                          [--calibrated 'stores/<model>.ordinary-L*.jsonl.gz']

Reads the two stores only (no model): for every neuron both hold, the paper's top-window F1, and
on the held-out documents (every token; means over the neurons firing there at least
``MIN_FIRING`` times) precision / recall / F1 and r of each, the token-lookup floor's r, and r on
the interval protocol; then the calibrated graphs' size and cost (paths, ordinary-text tokens a
neuron, stage seconds a neuron from the build records). One markdown row a layer.
"""

from __future__ import annotations

import argparse
import glob
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from store.graph import NeuronGraph  # noqa: E402
from store.jsonl import read_store  # noqa: E402
from store.metrics import MIN_FIRING, mean_defined  # noqa: E402


def _cell(values, digits: int = 2) -> str:
    v = mean_defined(list(values))
    return "-" if v is None else f"{v:.{digits}f}"


HEADER = ["| layer | neurons | top-window F1, fitted -> calibrated | held-out P / R / F1, fitted | held-out P / R / F1, "
          "calibrated | r, fitted -> calibrated | floor r | interval r, calibrated / floor | paths a graph | "
          "ordinary-text tokens a neuron |", "|" + " --- |" * 10]


def rows(fitted: dict[tuple[int, int], NeuronGraph], calibrated: dict[tuple[int, int], NeuronGraph]) -> list[str]:
    """The table's lines of the calibrated graphs' layers (below :data:`HEADER`)."""
    out = []
    for layer in sorted({layer for layer, _ in calibrated}):
        pairs = [(fitted[k], g) for k, g in calibrated.items() if k[0] == layer and k in fitted
                 and g.fidelity is not None and fitted[k].fidelity is not None]
        firing = [(f, g) for f, g in pairs if g.fidelity.heldout is not None and f.fidelity.heldout is not None
                  and g.fidelity.heldout.n2g.tokens.firing >= MIN_FIRING]

        def prf(side: int) -> str:
            return " / ".join(_cell(getattr(p[side].fidelity.heldout.n2g.tokens, name) for p in firing)
                              for name in ("precision", "recall", "f1"))

        top = f"{_cell(f.fidelity.n2g.top.f1 for f, _ in pairs)} -> {_cell(g.fidelity.n2g.top.f1 for _, g in pairs)}"
        r = (f"{_cell(f.fidelity.heldout.n2g.tokens.correlation for f, _ in firing)} -> "
             f"{_cell(g.fidelity.heldout.n2g.tokens.correlation for _, g in firing)}")
        interval = (f"{_cell(g.fidelity.heldout.n2g.interval.correlation for _, g in firing)} / "
                    f"{_cell(g.fidelity.heldout.floor.interval.correlation for _, g in firing)}")
        tokens = _cell(((g.build.get("per_neuron") or {}).get("ordinary_tokens_forwarded") for _, g in pairs), 0)
        out.append(f"| {layer} | {len(firing)} / {len(pairs)} | {top} | {prf(0)} | {prf(1)} | {r} | "
                   f"{_cell(g.fidelity.heldout.floor.tokens.correlation for _, g in firing)} | {interval} | "
                   f"{_cell((len(g.graph) for _, g in pairs), 0)} | {tokens} |")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="smollm2-135m", help="the stores' model (default: %(default)s)")
    parser.add_argument("--fitted", help="default: stores/<model>.jsonl.gz")
    parser.add_argument("--calibrated", help="a glob; default: 'stores/<model>.ordinary-L*.jsonl.gz'")
    args = parser.parse_args()
    fitted_path = args.fitted or str(ROOT / "stores" / f"{args.model}.jsonl.gz")
    pattern = args.calibrated or str(ROOT / "stores" / f"{args.model}.ordinary-L*.jsonl.gz")
    parts = sorted(glob.glob(pattern))
    if not parts:
        raise SystemExit(f"no calibrated graphs in {pattern}")
    print("\n".join(HEADER))
    for path in parts:  # a part and the fitted graphs of its layers at a time: the whole atlas is GBs as graphs
        calibrated = read_store(path).graphs
        fitted = read_store(fitted_path, layers={layer for layer, _ in calibrated}).graphs
        print("\n".join(rows(fitted, calibrated)), flush=True)


if __name__ == "__main__":
    main()
