"""The viewer's pages as HTML: the models, a model, a neuron, and an error.

In: what ``n2g_mcp.viewer.data`` gathered (the query library's own results). Out: whole HTML
pages (``n2g_mcp.viewer.html`` makes the shell and escapes). The neuron page's predict box is
the one part that runs in the browser (``static/predict.js``: it posts the text to
``/api/predict`` and shades the answer).
"""

from __future__ import annotations

from n2g_mcp.outputs import ListModelsOutput, SearchOutput
from n2g_mcp.viewer.charts import histogram, layer_plot
from n2g_mcp.viewer.data import ModelData, NeuronData
from n2g_mcp.viewer.html import e, model_link, neuron_link, number, page, shaded_text, table
from n2g_mcp.viewer.links import model_path, neuron_path
from store.graph import Fidelity
from store.render import display_token

PROTOCOLS = (("top", "held-out top examples (the paper's Table 1)"),
             ("random", "plus random text as negatives"),
             ("short", "cut to a short text around the pivot"))
METHODS = (("n2g", "N2G graph"), ("token_lookup", "token lookup"), ("ngram_lookup", "n-gram lookup"))


def index_page(models: ListModelsOutput) -> str:
    rows = [(model_link(m.model), f"{m.graphs:,}", str(m.n_layers or "–"), str(m.d_mlp or "–"),
             "yes" if m.can_build else e(m.build_note or "no")) for m in models.models]
    body = ("<h1>Models</h1>" + table(["model", "graphs", "layers", "neurons a layer", "runs here"], rows)
            + "<p>Open a neuron directly: <code>/m/&lt;model&gt;/L&lt;layer&gt;/N&lt;neuron&gt;</code>.</p>")
    return page("models", body, crumbs=[("models", None)])


def _search_results(model: str, out: SearchOutput) -> str:
    rows = [(neuron_link(model, h.layer, h.neuron), e(", ".join(display_token(t) for t in h.activating_tokens)),
             e(", ".join(display_token(t) for t in h.context_tokens)), number(h.f1), number(h.explained))
            for h in out.results]
    more = f"<p>{out.total:,} graphs match; the first {len(out.results)} shown.</p>" if out.total > len(out.results) \
        else f"<p>{out.total:,} graphs match.</p>"
    return more + table(["neuron", "activating tokens", "context tokens", "F1", "explained"], rows, "hits")


def model_page(data: ModelData) -> str:
    shape = f"{data.n_layers} layers × {data.d_mlp} neurons" if data.n_layers else "shape not known here"
    body = [f"<h1>{e(data.model)}</h1><p>{data.graphs:,} graphs · {e(shape)}</p>",
            f'<form class="search" method="get" action="{e(model_path(data.model))}">'
            '<label>fires on <input name="activating" placeholder="import, from" '
            f'value="{e(data.activating)}"></label> '
            f'<label>after <input name="context" placeholder="flask" value="{e(data.context)}"></label> '
            '<button type="submit">search</button> <span class="hint">tokens separated by commas; case and '
            "spaces ignored (search_graphs)</span></form>"]
    if data.error:
        body.append(f'<p class="error">{e(data.error)}</p>')
    if data.search is not None:
        body.append('<section id="results"><h2>Search</h2>' + _search_results(data.model, data.search) + "</section>")
    body.append("<h2>Fidelity by layer</h2><p>F1 of each layer's graphs on their held-out top examples: box from "
                "the lower to the upper quartile, line at the median, dot at the mean.</p>"
                + layer_plot(data.layers, lambda r: r.f1, "F1 by layer", top=1.0))
    if data.has_scan:
        body.append("<h2>Firing density by layer</h2><p>Share of corpus tokens at which each neuron fires (&gt;= 0.5 "
                    "of its max), from the model's scan.</p>"
                    + layer_plot(data.layers, lambda r: r.density, "density by layer", "{:.2%}"))
    rows = [(str(r.layer), f"{r.graphs:,}", number(r.f1.median if r.f1 else None),
             number(r.density.median if r.density else None, "{:.3%}"),
             neuron_link(data.model, r.layer, 0, "first neuron")) for r in data.layers]
    body.append("<h2>Layers</h2>" + table(["layer", "graphs", "median F1", "median density", ""], rows))
    return page(data.model, "".join(body), crumbs=[("models", "/"), (data.model, None)])


def _fidelity(fid: Fidelity) -> str:
    rows = []
    for key, name in METHODS:
        method = getattr(fid, key)
        cells = [e(name)]
        for protocol, _ in PROTOCOLS:
            s = getattr(method, protocol)
            cells.append("–" if s is None else
                         f'<span title="precision {number(s.precision)}, recall {number(s.recall)}, correlation '
                         f'{number(s.correlation)}, {s.firing} firing of {s.tokens} tokens">{number(s.f1)}</span>')
        rows.append(cells)
    return table(["F1 of", *(f'<span title="{e(t)}">{p}</span>' for p, t in PROTOCOLS)], rows, "fidelity")


def _ordinary(fid: Fidelity) -> str:
    """The graph and the token-lookup floor on held-out documents (issue 28), where stored."""
    held = fid.heldout
    if held is None:
        return ""
    rows = [[e(name), *(f"{number(s.precision)} / {number(s.recall)} / {number(s.f1)}, r {number(s.correlation)}"
                        for s in (side.tokens, side.interval))]
            for name, side in (("N2G", held.n2g), ("token lookup (floor)", held.floor))]
    return ("<h2>On ordinary text</h2><p class=\"hint\">Held-out documents no build read: every token, and the "
            "interval protocol (top, every activation interval, random); precision / recall / F1, and "
            "correlation r.</p>" + table(["predictor", "every token", "interval protocol"], rows, "fidelity"))


def _graph_section(data: NeuronData) -> str:
    g = data.graph
    if g is None:
        return f'<p class="missing">{e(data.missing or "No graph stored.")}</p>'
    out = [f'<p class="description">{e(g.description)}</p>']
    if g.output is not None:
        promoted = ", ".join(display_token(t.token) for t in g.output.promoted[:5])
        suppressed = ", ".join(display_token(t.token) for t in g.output.suppressed[:5])
        out.append(f"<p>Writes (direct path): promotes <b>{e(promoted)}</b>; suppresses <b>{e(suppressed)}</b></p>")
    picture = neuron_path(data.model, data.layer, data.neuron)
    out.append(f'<h2>Graph</h2><p class="hint">Open it alone as <a href="{e(picture)}.svg">SVG</a> or '
               f'<a href="{e(picture)}.png">PNG</a> (render_graph_dot\'s picture).</p>'
               f'<div class="graph">{data.svg or ""}</div>')
    return "".join(out)


def _windows(data: NeuronData) -> str:
    if not data.windows:
        return ""
    how = ("every token shaded by the real neuron's activation (a share of its max), measured now on the "
           "scan's windows" if data.measured else
           f"only each window's pivot is shaded, by the activation the scan stored ({e(data.measure_note)})")
    items = "".join(f'<li><span class="act">{w.activation:.2f}</span>{"…" if w.cut_before else ""}'
                    f'{shaded_text(w.tokens, w.shades, w.pivot)}{"…" if w.cut_after else ""}</li>'
                    for w in data.windows)
    return f'<h2>Top activations</h2><p class="hint">Pivot outlined; {how}.</p><ol class="windows">{items}</ol>'


def _similar(data: NeuronData) -> str:
    s = data.similar
    if s is None:
        return ""
    items = [(neuron_link(data.model, m.layer, m.neuron), number(m.activating_overlap), number(m.context_overlap))
             for m in s.results]
    if not items and s.nearest is not None:
        n = s.nearest
        return (f"<h2>Similar neurons</h2><p>None at overlap {s.threshold:g}; nearest: "
                f"{neuron_link(data.model, n.layer, n.neuron)} ({n.activating_overlap:.2f} / {n.context_overlap:.2f}).</p>")
    if not items:
        return "<h2>Similar neurons</h2><p>None shares its activating tokens.</p>"
    return ("<h2>Similar neurons</h2>" + table(["neuron", "activating overlap", "context overlap"], items, "similar"))


def _induction(data: NeuronData) -> str:
    repeat = data.graph is not None and ("<repeat>" in data.graph.activating_tokens
                                         or "<repeat>" in data.graph.context_tokens)
    parts = []
    if repeat:
        parts.append("<p>Its graph has a repeat path: it fires on tokens that continue an earlier copy in the "
                     "same text (induction-like).</p>")
    run, hit = data.induction_run, data.induction
    if run is not None and hit is not None:
        rank = next(i for i, r in enumerate(run.results, 1) if r.id == hit.id)
        parts.append(table(["rank", "rise", "Cohen's d", "fires on 1st copy", "on 2nd copy"],
                           [(f"{rank} of {len(run.results)}", f"{hit.score:.3f}", f"{hit.cohens_d:.2f}",
                             f"{hit.first:.1%}", f"{hit.second:.1%}")], "induction")
                     + f"<p class=\"hint\">From this server's last find_induction_neurons run (seeds "
                       f"{e(', '.join(map(str, run.seeds)))}, {run.sequences} sequences of {run.length} tokens).</p>")
    elif run is not None:
        parts.append(f"<p>Not among the top {len(run.results)} of this server's last induction probe run.</p>")
    return "<h2>Induction probe</h2>" + "".join(parts) if parts else ""


def _predict_box(data: NeuronData, text: str) -> str:
    what = ("the graph's prediction beside the real neuron, token by token" if data.can_compare else
            f"the graph's prediction (the real neuron cannot run here: {e(data.compare_note)})")
    return (f'<h2>Try a text</h2><form id="predict" data-model="{e(data.model)}" data-layer="{data.layer}" '
            f'data-neuron="{data.neuron}" data-compare="{"1" if data.can_compare else "0"}">'
            f'<textarea name="text" rows="3" placeholder="Type text to test the neuron on">{e(text)}</textarea>'
            f'<button type="submit">predict</button> <span class="hint">{what}</span></form>'
            '<div id="predict-out" aria-live="polite"></div>')


def neuron_page(data: NeuronData, text: str = "") -> str:
    """A neuron's page; ``text`` (the address's ``?text=``) is run in its predict box as it opens."""
    g = data.graph
    head = f"<h1>{e(data.id)} <small>{e(data.model)}</small></h1>"
    nav = " · ".join(neuron_link(data.model, data.layer, n, label) for n, label in
                     ((data.neuron - 1, "previous"), (data.neuron + 1, "next")) if n >= 0)
    body = [head, f"<p>{nav}</p>", _graph_section(data)]
    if g is not None and g.fidelity is not None:
        body.append(f"<p>F1 {number(g.fidelity.f1)} on held-out top examples.</p>")
    body.append(_windows(data))
    if data.stats is not None:
        body.append(f"<h2>Activations over the corpus</h2><p>Max {data.stats.max_activation:.3f} (raw); fires on "
                    f"{data.stats.density:.2%} of tokens; quantiles "
                    + e(", ".join(f"{k} {v:.3f}" for k, v in data.stats.quantiles.items()))
                    + "</p>" + histogram(data.stats))
    if data.fidelity is not None:
        body.append("<h2>Fidelity</h2><p class=\"hint\">F1 on every protocol stored with the graph (hover for "
                    "precision, recall and correlation).</p>" + _fidelity(data.fidelity) + _ordinary(data.fidelity))
    body += [_similar(data), _induction(data), _predict_box(data, text) if g is not None else ""]
    crumbs = [("models", "/"), (data.model, model_path(data.model)), (data.id, None)]
    return page(f"{data.id} {data.model}", "".join(body), crumbs=crumbs, script=g is not None)


def error_page(message: str, status: int) -> str:
    return page(f"error {status}", f'<h1>Not shown</h1><p class="error">{e(message)}</p>',
                crumbs=[("models", "/")])
