"""The models a server lets clients name, and how an operator adds one."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from n2g_mcp.registry import ServedModels, looks_like_path, parse_model_option
from store.models import DEFAULT_MODEL


def test_an_operator_model_is_served_under_its_name_with_the_shape_of_its_config(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(json.dumps({"num_hidden_layers": 6, "intermediate_size": 2048}))
    spec = parse_model_option(f"tiny={tmp_path}")
    served = ServedModels(configured=[spec])
    assert served.spec("tiny") == spec and spec.local and spec.shape == (6, 2048)
    assert served.names() == [DEFAULT_MODEL, "gemma3-270m", "tiny"]  # the default first, then by name


@pytest.mark.parametrize("option", ["tiny", "=/models/x", "tiny=", "a/b=/models/x", "../x=/models/x"])
def test_a_malformed_model_option_is_refused(option: str) -> None:
    with pytest.raises(ValueError, match="--model"):
        parse_model_option(option)


def test_hub_names_are_served_only_when_allowed_and_never_as_local_paths() -> None:
    assert ServedModels().spec("EleutherAI/pythia-70m") is None
    spec = ServedModels(allow_hub=True).spec("EleutherAI/pythia-70m")
    assert spec is not None and spec.local is False and spec.location == "EleutherAI/pythia-70m"
    assert ServedModels(allow_hub=True).spec("../models") is None


@pytest.mark.parametrize("name", ["/etc", "./m", "~/m", "a/b/c", "a/../b", "C:\\m", "m\x00"])
def test_names_shaped_like_paths_are_recognised(name: str) -> None:
    assert looks_like_path(name)
