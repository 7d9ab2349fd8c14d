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
