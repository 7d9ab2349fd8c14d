"""The demo (``make demo``): scripted investigations through a real MCP client, as an agent
would run them.

Nothing in the package imports it: it is a client of the server, run as a program. It starts the server (``python -m n2g_mcp``) as a stdio subprocess, talks to it only through the
MCP SDK's client, and prints a readable report. Two workflows:

- ``induction`` (the default, ``make demo``): the ``find-induction-neurons`` prompt's steps. The
  standard behavioural probe over every layer (``find_induction_neurons``: random tokens repeated
  once, with the model's own loss on each copy), the candidates' top corpus windows and graphs
  (``top_activations``, ``build_graph``, the graph against the real neuron on fresh repeated
  text), causal evidence (``ablate_neurons`` against a random control, with each neuron's own
  share), steering (``steer_neurons``: the candidates silenced, then the strongest boosted, on a
  prompt that repeats itself), a token-identity explanation checked at corpus scale
  (``test_hypothesis``), and which neurons fire at a repeated word (``find_neurons``).
- ``neuron``: one neuron end to end: in-context neurons found by search, a graph built (or
  fetched), a hypothesis tested against the real neuron, similar neurons, and a DOT drawing.

    python -m n2g_mcp.demo                                  # the induction investigation
    python -m n2g_mcp.demo --workflow neuron --layer 2 --neuron 17 --out out/

Exit status: 0 when the investigation completed, 1 when a step it needs failed (the report says
which and why).
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import time
from pathlib import Path
from typing import Any

import anyio
from mcp import Client
from mcp.client.stdio import StdioServerParameters
from mcp_types import CallToolResult

from n2g_mcp.viewer.links import DEFAULT_VIEWER_URL
from store.probes import PROBE_LENGTH, PROBE_SEQUENCES

REPEAT_TEXT = ("The old lighthouse keeper wrote in his logbook every night. Years later, his "
               "granddaughter found the old lighthouse keeper")
"""A text whose last words repeat earlier ones: in-context neurons should fire at its end."""
STEER_PROMPT = "lamp violin desert cobalt ferry mango quartz tulip. lamp violin desert"
"""A prompt that repeats itself: intact, the model continues the copy; steering shows what the
candidates do to that."""
REPEATED_WORDS = ("river orange candle mirror planet garden window silver thunder pocket. "
                  "river orange candle mirror planet garden window silver thunder pocket.")
"""Unrelated words, then the same again: an in-context neuron fires on the second half."""
NEGATIVE_TEXT = "The weather report for tomorrow says it will be mild, with light wind from the west."
"""A plain sentence used as a negative control when the neuron's tokens are not in it."""


class StepFailed(Exception):
    """A tool call the investigation cannot go on without returned an error."""


def _text(result: CallToolResult) -> str:
    return "\n".join(getattr(block, "text", "") for block in result.content).strip()


def _indent(text: str, prefix: str = "    ") -> str:
    return "\n".join(prefix + line for line in text.splitlines())


def _plain(example_text: str) -> str:
    """An example window as plain text: pivot markers and cut marks removed."""
    return example_text.replace("[[", "").replace("]]", "").strip("…")


class Investigation:
    """One investigation over an open client; each step prints what it found."""

    def __init__(self, client: Client, out: Any = sys.stdout) -> None:
        self.client, self.out = client, out
        self.findings: list[str] = []
        self.pages: list[str] = []
        """The viewer pages the answers linked to (``viewer_url``), first seen first."""

    def say(self, text: str = "") -> None:
        print(text, file=self.out, flush=True)

    def heading(self, text: str) -> None:
        self.say()
        self.say(f"== {text}")

    async def call(self, tool: str, required: bool = True, **args: Any) -> CallToolResult:
        shown = ", ".join(f"{k}={v!r}" for k, v in args.items())
        self.say(f"-> {tool}({shown})")
        started = time.monotonic()
        last: list[Any] = [-100.0, None]

        async def progress(done: float, total: float | None, message: str | None) -> None:
            # One line per new stage, and one per 5% within a stage (the count in brackets aside).
            stage = re.sub(r" \(\d+/\d+\)$", "", message or "")
            if done - last[0] >= 5 or stage != last[1]:
                last[:] = [done, stage]
                pct = f"{done:5.1f}%" if total == 100 else f"{done:g}/{total}"
                self.say(f"   [{pct}] {message or ''}")

        result = await self.client.call_tool(tool, args, progress_callback=progress)
        took = time.monotonic() - started
        if result.is_error:
            self.say(_indent(f"error ({took:.1f}s): {_text(result)}"))
            if required:
                raise StepFailed(f"{tool} failed: {_text(result)}")
        elif took > 2:
            self.say(f"   ({took:.1f}s)")
        url = (result.structured_content or {}).get("viewer_url")
        if url and url not in self.pages:
            self.pages.append(url)
        return result

    async def run(self, layer: int, neuron: int | None, out_dir: Path) -> None:
        self.heading("1. What the stores hold")
        models = await self.call("list_models")
        self.say(_indent(_text(models)))
        default = next(m for m in models.structured_content["models"] if m["default"])
        model = default["model"]
        if not default["can_build"] and not default["graphs"]:
            raise StepFailed(f"no graphs of {model} are stored and none can be built here: {default['build_note']}")

        self.heading(f"2. Search layer {layer} for in-context (induction-like) neurons")
        hits: list[dict[str, Any]] = []
        if default["graphs"]:
            repeated = await self.call("search_graphs", required=False, repeated=True, layer=layer, limit=5)
            self.say(_indent(_text(repeated)))
            best = await self.call("search_graphs", required=False, layer=layer, limit=5)
            self.say(_indent(_text(best)))
            for result in (repeated, best):
                if not result.is_error:
                    hits += result.structured_content["results"]
        else:
            self.say("    (the store is empty: nothing to search yet)")
        if neuron is None:
            neuron = hits[0]["neuron"] if hits else 0
            why = f"the top search hit {hits[0]['id']}" if hits else "neuron 0 (nothing found to choose from)"
            self.say(f"Chose {why}.")

        self.heading(f"3. Build (or fetch) the graph of L{layer}/N{neuron}")
        built = await self.call("build_graph", layer=layer, neuron=neuron)
        self.say(_indent(_text(built).splitlines()[0]))
        description = await self.call("get_graph", layer=layer, neuron=neuron)
        self.say(_indent(_text(description)))
        graph = description.structured_content
        acts = list(graph["activating_tokens"])
        ctx = list(graph["context_tokens"])
        fid = graph["fidelity"]
        self.findings.append(
            f"{graph['id']} fires on {', '.join(map(repr, acts[:5])) or 'nothing'}"
            + (f" after {', '.join(map(repr, ctx[:5]))}" if ctx else "")
            + (f"; graph F1 {fid['f1']:.2f} on held-out examples" if fid and fid["f1"] is not None else ""))

        self.heading("4. Test the hypothesis against the real neuron")
        # (label, text, whether the neuron should fire on it if the graph is right)
        texts: list[tuple[str, str, bool]] = []
        if graph["examples"]:
            texts.append(("pruned example", _plain(graph["examples"][0]["text"]), True))
        top = await self.call("top_activations", required=False, layer=layer, neuron=neuron, limit=3)
        if not top.is_error and top.structured_content["examples"]:
            texts.append(("top corpus example", _plain(top.structured_content["examples"][0]["text"]), True))
        if acts:
            alone = acts[0].strip() + " " + acts[0].strip() + "."
            # Without context tokens the graph says the token alone fires it; with them, it should not.
            texts.append(("activating token alone", alone, not ctx))
        negative = NEGATIVE_TEXT
        if any(re.search(re.escape(t.strip()), negative, re.IGNORECASE) for t in acts[:10] if t.strip()):
            negative = "1 2 3 4 5 6 7 8 9 10"
        texts.append(("unrelated control text", negative, False))
        agreement: list[str] = []
        for label, text, should_fire in texts:
            self.say(f"  {label}, should {'' if should_fire else 'not '}fire: {text[:120]!r}")
            result = await self.call("predict_activations", required=False, layer=layer, neuron=neuron,
                                     text=text, compare=True, expect="fire" if should_fire else "silent")
            if result.is_error:
                continue
            self.say(_indent(_text(result)))
            data = result.structured_content
            peak = max(data["actual"] or [0.0])
            verdict = "as expected" if data["as_expected"] else "NOT as expected"
            f1 = data["agreement"]["f1"]
            agreement.append(f"{label}: real peak {peak:.2f}, {'fires' if peak >= 0.5 else 'silent'} "
                             f"({verdict}); graph vs real F1 {'n/a (nothing fires)' if f1 is None else format(f1, '.2f')}")
        self.findings += agreement or ["the real neuron could not be run (see step 4)"]

        self.heading("5. Similar neurons")
        # Token overlap, and the neurons that fire with it in its layer and those below (the model's
        # pass stops at the target's layer, which it reads anyway).
        similar = await self.call("find_similar_neurons", required=False, layer=layer, neuron=neuron, threshold=0.5,
                                  layers=list(range(layer + 1)), limit=8)
        self.say(_indent(_text(similar)))
        pairs = await self.call("find_similar_neurons", required=False, layer=layer, limit=5)  # the paper's threshold
        self.say(_indent(_text(pairs)))
        if not similar.is_error:
            found = [r["id"] for r in similar.structured_content["results"]]
            self.findings.append(f"neurons like it (overlap >= 0.5): {', '.join(found[:5]) or 'none among the stored graphs'}")
            coactive = similar.structured_content.get("coactivation")
            if coactive:
                self.findings.append("neurons that fire with it: " + (", ".join(
                    r["id"] for r in coactive["results"][:5]) or "none") + f" ({coactive['source']})")

        self.heading("6. Draw the graph")
        render = await self.call("render_graph_dot", layer=layer, neuron=neuron)
        data = render.structured_content
        out_dir.mkdir(parents=True, exist_ok=True)
        path = out_dir / f"L{layer}_N{neuron}.dot"
        path.write_text(data["dot"], encoding="utf-8")
        self.say(_indent(f"{data['shown_nodes']} of {data['nodes']} nodes drawn; saved to {path} "
                         f"(render: dot -Tsvg {path} -o {path.with_suffix('.svg')})"))
        self.findings.append(f"drawing: {path}")

    async def run_induction(self, sequences: int, length: int, candidates: int = 20) -> None:
        """The find-induction-neurons workflow (see the module docstring)."""
        self.heading("1. What the server holds")
        models = await self.call("list_models")
        self.say(_indent(_text(models)))

        self.heading("2. Behavioural probe: random tokens repeated once; which neurons respond to the copy?")
        probe = await self.call("find_induction_neurons", limit=100, sequences=sequences, length=length)
        self.say(_indent(_text(probe)))
        p = probe.structured_content
        chosen = [r for r in p["results"] if r["score"] > 0][:candidates]
        if not chosen:
            raise StepFailed("the probe found no neuron more active on the copy than on the first occurrence")
        layers = sorted({r["layer"] for r in chosen})
        self.say(f"Chose the {len(chosen)} best (rise), in layers {', '.join(map(str, layers))}.")
        self.findings.append(f"the model copies at the probe's settings: loss {p['loss_first_copy']:.2f} nats on "
                             f"the first copy, {p['loss_second_copy']:.2f} on the second")
        self.findings.append(f"probe ({p['seconds']:.1f} s, seeds {p['seeds']}): best "
                             + ", ".join(f"{r['id']} rise {r['score']:.2f}" for r in chosen[:5]))

        self.heading("3. Read the top candidates: corpus windows and graphs")
        for r in chosen[:2]:
            top = await self.call("top_activations", required=False, layer=r["layer"], neuron=r["neuron"], limit=3)
            self.say(_indent(_text(top)))
            # The store ships the probe's best with repeat-aware graphs; any other is built now.
            built = await self.call("build_graph", required=False, layer=r["layer"], neuron=r["neuron"])
            self.say(_indent(_text(built)))
            await self.graph_on_repeated_text(r)

        self.heading("4. Causal evidence: ablate the candidates together and each alone, against random neurons")
        ids = [r["id"] for r in chosen]
        ablation = await self.call("ablate_neurons", neurons=ids, each=len(ids) <= 32)
        self.say(_indent(_text(ablation)))
        a = ablation.structured_content
        verdict = ("raises the copy loss more than the control" if a["delta"] > abs(a["control_delta"] or 0)
                   else "does not raise the copy loss beyond the control")
        self.findings.append(f"ablating {len(chosen)} candidates {verdict}: delta {a['delta']:+.3f} nats "
                             f"vs control {a['control_delta']:+.3f}")
        if a["each"]:
            self.findings.append("alone, the largest: " + ", ".join(f"{e['id']} {e['delta']:+.3f}"
                                                                     for e in a["each"][:3]))

        self.heading("5. Steering: what does the model write with the candidates silenced, and held on?")
        strongest = [e["id"] for e in a["each"][:5]] or ids[:5]
        steered = await self.call("steer_neurons", required=False, neurons=ids, prompt=STEER_PROMPT, scale=0.0,
                                  max_new_tokens=12)
        self.say(_indent(_text(steered)))
        if not steered.is_error:
            s = steered.structured_content
            self.findings.append(f"silencing the {len(ids)} candidates on a repeating prompt: clean "
                                 f"{s['clean_text']!r}, steered {s['steered_text']!r}")
        boosted = await self.call("steer_neurons", required=False, neurons=strongest, prompt=STEER_PROMPT,
                                  scale=2.0, max_new_tokens=12)
        self.say(_indent(_text(boosted)))
        if not boosted.is_error:
            self.findings.append(f"holding the {len(strongest)} strongest at 2x their corpus max: "
                                 f"{boosted.structured_content['steered_text']!r}")

        self.heading("6. Is it just the token? A token-identity claim checked at corpus scale")
        best = chosen[0]
        window = await self.call("top_activations", required=False, layer=best["layer"], neuron=best["neuron"], limit=1)
        if not window.is_error and window.structured_content["examples"]:
            token = window.structured_content["examples"][0]["pivot_token"]
            claim = await self.call("test_hypothesis", required=False, layer=best["layer"], neuron=best["neuron"],
                                    pattern=token, kind="tokens")
            self.say(_indent(_text(claim)))
            if not claim.is_error:
                f1 = claim.structured_content["overall"]["f1"]
                self.findings.append(f"{best['id']} is not a detector of its top token {token!r}: claim F1 "
                                     f"{'n/a' if f1 is None else format(f1, '.2f')} at corpus scale")

        self.heading("7. Which neurons fire at a repeated phrase?")
        fired = await self.call("find_neurons", required=False, text=REPEAT_TEXT, limit=10)
        self.say(_indent(_text(fired)))
        if not fired.is_error:
            chosen_ids = set(ids)
            overlap = [h["id"] for h in fired.structured_content["results"] if h["id"] in chosen_ids]
            self.findings.append("at the repeated 'keeper': "
                                 + (f"candidates {', '.join(overlap)} among the 10 most active"
                                    if overlap else "none of the candidates among the 10 most active"))

    async def graph_on_repeated_text(self, candidate: dict[str, Any]) -> None:
        """The candidate's graph (just rebuilt, so it may hold repeat nodes: "this continues an
        earlier copy") against the real neuron on fresh repeated text."""
        result = await self.call("predict_activations", required=False, layer=candidate["layer"],
                                 neuron=candidate["neuron"], text=REPEATED_WORDS, compare=True)
        if result.is_error:
            return
        self.say(_indent(_text(result).splitlines()[0]))
        f1 = result.structured_content["agreement"]["f1"]
        self.findings.append(f"{candidate['id']}'s graph on fresh repeated text: F1 "
                             f"{'n/a (nothing fires)' if f1 is None else format(f1, '.2f')}")

    def report(self) -> None:
        self.heading("Findings")
        for line in self.findings:
            self.say(f"- {line}")
        self.say()
        self.say("See the neurons in a browser: run `python -m n2g_mcp view` (or `.venv/bin/n2g-mcp view`), then open")
        for url in self.pages[:5] or [DEFAULT_VIEWER_URL + "/"]:
            self.say(f"  {url}")


async def investigate(stores: Path | None, layer: int, neuron: int | None, out_dir: Path,
                      out: Any = sys.stdout, command: list[str] | None = None, workflow: str = "neuron",
                      sequences: int = PROBE_SEQUENCES, length: int = PROBE_LENGTH) -> int:
    """Run an investigation against a server subprocess; returns the exit status.

    ``command`` replaces the server command (``python -m n2g_mcp [--stores DIR]``), for tests;
    ``workflow`` is ``neuron`` or ``induction`` (with the probe's ``sequences`` and ``length``).
    """
    if command is None:
        command = [sys.executable, "-m", "n2g_mcp"] + (["--stores", str(stores)] if stores else [])
    # The server inherits this environment (N2G_STORES, N2G_CACHE).
    params = StdioServerParameters(command=command[0], args=command[1:], env=dict(os.environ))
    print(f"Starting the n2g-mcp server: {' '.join(command)}", file=out, flush=True)
    try:
        async with Client(params) as client:
            investigation = Investigation(client, out)
            try:  # inside the client, whose task group would wrap the exception
                if workflow == "induction":
                    await investigation.run_induction(sequences, length)
                else:
                    await investigation.run(layer, neuron, out_dir)
            except StepFailed as exc:
                print(f"\nInvestigation stopped: {exc}", file=out, flush=True)
                investigation.report()
                return 1
            investigation.report()
            return 0
    except Exception as exc:  # the client's task groups wrap what went wrong; show the innermost
        while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
            exc = exc.exceptions[0]
        print(f"\nThe server could not be started or stopped answering ({exc!r}); see its messages "
              f"above, and check that n2g-mcp is installed for {sys.executable}.", file=out, flush=True)
        return 1


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m n2g_mcp.demo", description=__doc__.splitlines()[0])
    parser.add_argument("--stores", type=Path, default=None,
                        help="stores directory (default: the server's, $N2G_STORES else the repository's stores/)")
    parser.add_argument("--workflow", choices=["induction", "neuron"], default="induction",
                        help="induction: find and test induction-like neurons (default); neuron: one neuron")
    parser.add_argument("--layer", type=int, default=0, help="layer to investigate (default 0)")
    parser.add_argument("--neuron", type=int, default=None, help="neuron to investigate (default: chosen by search)")
    parser.add_argument("--out", type=Path, default=Path("out") / "investigate",
                        help="where the DOT drawing is saved (default out/investigate)")
    args = parser.parse_args(argv)
    if args.layer < 0 or (args.neuron is not None and args.neuron < 0):
        parser.error("--layer and --neuron must be 0 or more")
    started = time.monotonic()
    status = anyio.run(investigate, args.stores, args.layer, args.neuron, args.out, sys.stdout, None,
                       args.workflow)
    print(f"\n(wall time {time.monotonic() - started:.0f} s)")
    sys.exit(status)


if __name__ == "__main__":
    main()
