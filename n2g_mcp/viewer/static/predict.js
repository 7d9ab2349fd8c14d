// The neuron page's predict box: post the text to /api/predict (predict_activations, with the
// real neuron beside the graph where the model runs here) and shade the answer token by token.
"use strict";
(function () {
  const form = document.getElementById("predict");
  if (!form) return;
  const out = document.getElementById("predict-out");

  function row(label, tokens, values) {
    const div = document.createElement("div");
    div.className = "row";
    const name = document.createElement("span");
    name.className = "label";
    name.textContent = label;
    const text = document.createElement("div");
    text.className = "text";
    tokens.forEach(function (token, i) {
      const span = document.createElement("span");
      const v = values[i];
      span.className = "tok";
      span.dataset.act = v.toFixed(3);
      span.title = JSON.stringify(token) + ": " + v.toFixed(2) + " of max";
      if (v > 0) span.style.background = "rgba(255, 64, 32, " + (Math.min(v, 1) * 0.85).toFixed(3) + ")";
      span.textContent = token.replace(/\n/g, "\u21b5\n") || "\u2205";
      text.appendChild(span);
    });
    div.append(name, text);
    return div;
  }

  async function run(event) {
    if (event) event.preventDefault();
    out.textContent = "running…";
    const body = {
      model: form.dataset.model, layer: Number(form.dataset.layer), neuron: Number(form.dataset.neuron),
      text: form.elements.text.value, compare: form.dataset.compare === "1",
    };
    try {
      const reply = await fetch("/api/predict", {
        method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body),
        credentials: "same-origin",
      });
      const data = await reply.json();
      out.textContent = "";
      if (!reply.ok) { out.textContent = data.error; out.className = "error"; return; }
      out.className = "";
      out.appendChild(row("graph predicts", data.tokens, data.predicted));
      if (data.actual) out.appendChild(row("real neuron", data.tokens, data.actual));
      if (data.agreement) {
        const p = document.createElement("p");
        p.className = "hint";
        const fmt = function (v) { return v == null ? "\u2013" : v.toFixed(2); };
        p.textContent = "agreement: F1 " + fmt(data.agreement.f1) + ", correlation " + fmt(data.agreement.correlation);
        out.appendChild(p);
      }
    } catch (error) {
      out.textContent = "the request failed: " + error;
    }
  }

  form.addEventListener("submit", run);
  // A page opened with ?text=... (a link someone shared) runs it at once.
  if (form.elements.text.value) run();
})();
