"""The live interface is defined once (``n2g_mcp.live.LiveBackend``): the builder's live models
and the tests' double must take the same arguments for every method of it."""

from __future__ import annotations

import inspect

import pytest

from n2g_mcp.live import BuilderBackend, LiveBackend
from tests.fakes import FakeLiveBackend

METHODS = [name for name, value in vars(LiveBackend).items()
           if callable(value) and not name.startswith("_")]


def parameters(fn: object) -> list[tuple[str, object]]:
    return [(p.name, p.kind) for p in inspect.signature(fn).parameters.values()]


def test_the_interface_names_every_call_the_queries_make() -> None:
    assert {"availability", "tokens", "encode", "activations", "build", "neurons_at", "induction",
            "ablate", "steer", "hypothesis"} <= set(METHODS)


@pytest.mark.parametrize("name", [m for m in METHODS if m != "availability"])
def test_the_builders_live_models_implement_it_as_declared(name: str) -> None:
    from builder.run.live import LiveModels

    assert parameters(getattr(LiveModels, name)) == parameters(getattr(LiveBackend, name))


@pytest.mark.parametrize("name", ["availability", "tokens", "activations", "build"])
def test_the_fake_implements_what_the_server_tests_use(name: str) -> None:
    assert parameters(getattr(FakeLiveBackend, name)) == parameters(getattr(LiveBackend, name))


def test_the_lazy_backend_reaches_the_live_models_without_restating_them() -> None:
    from builder.run.live import LiveModels

    models = LiveModels()
    backend = BuilderBackend(models=models)
    assert backend.tokens.__func__ is LiveModels.tokens  # type: ignore[attr-defined]
    with pytest.raises(AttributeError):
        backend._private  # noqa: B018
