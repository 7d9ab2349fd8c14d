"""The typed parameters the MCP tools share: strict (no ``true`` for a number, no ``"yes"`` for a
flag), each with the description and limits an agent reads in the input schema."""

from typing import Annotated, Any

from pydantic import BeforeValidator, Field, Strict


def _one_or_many(value: Any) -> Any:
    """A single token where a list is expected is read as a list of that one token."""
    return [value] if isinstance(value, str) else value


Count = Annotated[int, Strict()]
Flag = Annotated[bool, Strict()]
Tokens = Annotated[list[Annotated[str, Strict(), Field(max_length=200)]], BeforeValidator(_one_or_many)]
Layer = Annotated[int, Strict(), Field(ge=0, description="Layer index, from 0 (list_models gives the model's layers).")]
Neuron = Annotated[int, Strict(), Field(ge=0, description="Neuron index within the layer's MLP, from 0.")]
ModelName = Annotated[Annotated[str, Strict()] | None, Field(
    max_length=200, description="Model name; omit for the server's default model (see list_models).")]
Cursor = Annotated[Annotated[str, Strict()] | None, Field(
    max_length=200, description="next_cursor from the previous page with the same arguments; omit for the first page.")]
Layers = Annotated[list[Annotated[int, Strict(), Field(ge=0)]] | None, Field(
    max_length=200, description="Layers to include; omit for every layer of the model.")]
Neurons = Annotated[Annotated[list[Annotated[str, Strict(), Field(max_length=40)]], BeforeValidator(_one_or_many)],
                    Field(min_length=1, description="Neuron ids such as 'L17/N938'.")]
UnitsName = Annotated[Annotated[str, Strict()] | None, Field(
    max_length=100, description="'neurons' (the default: the MLP's neurons) or the name of one of the "
    "model's dictionaries (SAE or transcoder latents; list_models lists them with their quality), e.g. "
    "'mlp-3k'. With a dictionary, `neuron` is a latent's index and ids read 'L7/F12'.")]


def unit_model(model: str | None, units: str | None) -> str | None:
    """The model argument a query takes for ``units``: the model itself for neurons, else its
    units key ``model@units`` (``@units`` alone: the server's default model's dictionary).

    >>> unit_model("smollm2-135m", "mlp-3k"), unit_model(None, "neurons"), unit_model(None, "mlp-3k")
    ('smollm2-135m@mlp-3k', None, '@mlp-3k')
    """
    if units is None or not units.strip() or units.strip() == "neurons":
        return model
    return f"{(model or '').strip()}@{units.strip()}"
