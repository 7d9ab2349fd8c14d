"""What neurons write, on the real default model (SmolLM2-135M) and its shipped files (issue 31).

The shipped output-token file is what the model's weights say (recomputed here for one layer),
and a deep neuron the file says writes ' eye' does make ' eye' likelier when raised on its own
top windows, mostly through its direct path.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from n2g_mcp.queries import Queries
from store.logitfile import LogitFile, logits_filename
from store.scanfile import scan_filename

pytestmark = pytest.mark.model

REPO_STORES = Path(__file__).resolve().parents[1] / "stores"
MODEL = "smollm2-135m"
EYE = (29, 100)
"""A last-layer neuron whose output direction promotes ' eye' (and 'Eye', ' eyes') first."""


@pytest.fixture(scope="module")
def queries(tmp_path_factory: pytest.TempPathFactory) -> Queries:
    """The query library over a stores directory holding the shipped scan and output-token files."""
    stores = tmp_path_factory.mktemp("stores")
    for name in (scan_filename(MODEL), logits_filename(MODEL)):
        shutil.copy(REPO_STORES / name, stores)
    return Queries(stores)


def test_the_shipped_output_tokens_are_what_the_weights_say():
    from builder.models import load_model
    from builder.stages.logits import direct_logits, excluded_ids, top_tokens

    model = load_model(MODEL, device="cpu")
    f = LogitFile(REPO_STORES / logits_filename(MODEL))
    layer = EYE[0]
    logits = direct_logits(model, layer, list(range(model.d_mlp)))  # (d_mlp, d_vocab)
    up_ids, up_values, _, _ = top_tokens(logits, f.top_k, excluded_ids(model))
    assert (up_ids.numpy() == f.ids["promoted"][layer]).mean() > 0.99  # float16 ties aside
    np.testing.assert_allclose(up_values.numpy(), f.values["promoted"][layer], rtol=2e-3, atol=2e-3)
    assert f.output(*EYE).promoted[0].token == " eye"


def test_raising_the_eye_neuron_on_its_top_windows_makes_eye_likelier_through_its_direct_path(queries: Queries):
    out = queries.output_effects(MODEL, *EYE, windows=4)
    assert out.static.promoted[0].token == " eye"
    rose = [s.token.strip().lower() for s in out.raised.rose[:5]]
    assert any(t.startswith("eye") for t in rose), rose
    assert out.raised.direct_correlation > 0.5 and out.raised.kl > 0
