"""``n2g logits``: every neuron's promoted and suppressed tokens, from the weights, into a file.

    n2g logits                          # smollm2-135m -> stores/smollm2-135m.logits.npz
    n2g logits --model gemma3-270m --top-k 10

Loads the model, carries every neuron's output row through the final norm and the unembedding
(``builder.stages.logits``; the approximation is described there and in docs/output.md) and
writes ``<model>.logits.npz`` (``store/logitfile.py``) beside the model's scan, where the server
reads it. Torch is imported only when the command runs.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from store.errors import BadArgument
from store.logitfile import TOP_K, logits_filename
from store.models import DEFAULT_MODEL


def cmd_logits(args: argparse.Namespace) -> int:
    from builder.models import load_model
    from builder.stages.logits import write_logits

    if not 1 <= args.top_k <= 1000:
        raise BadArgument("--top-k must be between 1 and 1000")
    out = Path(args.out) if args.out else Path(args.stores_dir) / logits_filename(args.name or args.model)
    model = load_model(args.model, device=args.device, as_name=args.name, dtype=args.dtype)
    written, seconds = write_logits(model, out, args.top_k)
    print(f"computed the top {args.top_k} promoted and suppressed tokens of all {model.n_layers * model.d_mlp:,} "
          f"neurons ({model.n_layers} layers x {model.d_mlp}, vocabulary {len(model.vocab):,}) in {seconds:.0f} s")
    print(f"wrote {written} ({written.stat().st_size / 1e6:.1f} MB)")
    return 0


def add_logits_command(sub: argparse._SubParsersAction, stores_dir: Path) -> argparse.ArgumentParser:
    """Add ``logits`` (every neuron's output tokens, written as a file) to a parser."""
    from builder.config import DTYPES

    s = sub.add_parser("logits", help="every neuron's most promoted and suppressed tokens through the "
                                      "unembedding, into stores/<model>.logits.npz")
    s.add_argument("--model", default=DEFAULT_MODEL,
                   help="smollm2-135m or gemma3-270m (embedded), a local HF directory or .gguf, or a hub name")
    s.add_argument("--name", help="file it under this model name (default: --model as given)")
    s.add_argument("--out", help="the file to write (default: stores/<model>.logits.npz)")
    s.add_argument("--top-k", type=int, default=TOP_K, help=f"tokens kept each way per neuron ({TOP_K})")
    s.add_argument("--device", help="cpu, cuda, cuda:1 ... (default: cuda if available)")
    s.add_argument("--dtype", choices=DTYPES, help="numeric type the model loads in (float32)")
    s.set_defaults(func=cmd_logits, stores_dir=stores_dir)
    return s
