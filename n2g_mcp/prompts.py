"""MCP prompts read from markdown files: a small front matter, then a body template.

In: a directory of ``*.md`` files (the repository's ``prompts/``). Out: one
:class:`mcp.server.mcpserver.prompts.Prompt` per file. A file looks like::

    ---
    name: test-hypothesis
    title: Test a hypothesis about a neuron
    description: Write texts that should and should not fire a neuron and check them.
    arguments:
      - name: layer
        description: the neuron's layer
        required: true
      - name: hypothesis
        description: what you think the neuron does
        default: whatever get_graph suggests
    ---
    Investigate L{layer}/N{neuron} ...

The front matter is a small subset of YAML (``key: value`` lines and one ``arguments`` list of
such mappings), parsed here so the server needs no YAML library. In the body, ``{name}`` is
replaced by the argument's value (or its default, or an empty string); other braces are left as
they are.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from mcp.server.mcpserver.prompts.base import Prompt, PromptArgument


class PromptFileError(ValueError):
    """A prompt file whose front matter cannot be read."""


def _value(text: str) -> str | bool:
    text = text.strip()
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"":
        return text[1:-1]
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    return text


def parse_prompt_file(text: str, source: str = "<prompt>") -> tuple[dict[str, Any], str]:
    """Split a prompt file into its front matter (a dict) and its body.

    >>> meta, body = parse_prompt_file("---\\nname: x\\narguments:\\n  - name: a\\n    required: true\\n---\\nHi {a}\\n")
    >>> meta["name"], meta["arguments"], body
    ('x', [{'name': 'a', 'required': True}], 'Hi {a}\\n')

    Raises:
        PromptFileError: where the file has no front matter or a line that is not ``key: value``.
    """
    lines = text.splitlines(keepends=True)
    if not lines or lines[0].strip() != "---":
        raise PromptFileError(f"{source}: must start with a '---' front matter line")
    try:
        end = next(i for i in range(1, len(lines)) if lines[i].strip() == "---")
    except StopIteration:
        raise PromptFileError(f"{source}: front matter has no closing '---'") from None
    meta: dict[str, Any] = {}
    items: list[dict[str, Any]] | None = None
    for number, raw in enumerate(lines[1:end], start=2):
        if not raw.strip() or raw.lstrip().startswith("#"):
            continue
        indented = raw[0] in " \t"
        line = raw.strip()
        if indented and items is not None:
            if line.startswith("- "):
                items.append({})
                line = line[2:].strip()
            if not items or ":" not in line:
                raise PromptFileError(f"{source}:{number}: expected '- name: ...' or 'key: value'")
            key, _, value = line.partition(":")
            items[-1][key.strip()] = _value(value)
            continue
        key, sep, value = line.partition(":")
        if not sep or indented:
            raise PromptFileError(f"{source}:{number}: expected 'key: value'")
        key = key.strip()
        if key == "arguments" and not value.strip():
            items = meta.setdefault("arguments", [])
        else:
            items = None
            meta[key] = _value(value)
    return meta, "".join(lines[end + 1:]).lstrip("\n")


def _renderer(name: str, body: str, defaults: dict[str, str]):
    pattern = re.compile(r"\{(" + "|".join(map(re.escape, defaults)) + r")\}") if defaults else None

    def render(**arguments: Any) -> str:
        if pattern is None:
            return body
        values = {k: str(arguments.get(k) or defaults[k]) for k in defaults}
        return pattern.sub(lambda m: values[m.group(1)], body)

    render.__name__ = name.replace("-", "_")
    return render


def load_prompt(path: Path) -> Prompt:
    """One prompt from a markdown file.

    Raises:
        PromptFileError: where the front matter is unreadable or lacks a name.
    """
    meta, body = parse_prompt_file(path.read_text(encoding="utf-8"), str(path))
    name = meta.get("name")
    if not isinstance(name, str) or not name:
        raise PromptFileError(f"{path}: front matter needs a name")
    arguments = [a for a in meta.get("arguments", []) if a.get("name")]
    defaults = {str(a["name"]): str(a.get("default", "")) for a in arguments}
    return Prompt(
        name=name,
        title=meta.get("title") or None,
        description=str(meta.get("description", "")),
        arguments=[PromptArgument(name=str(a["name"]), description=a.get("description") or None,
                                  required=a.get("required") is True) for a in arguments],
        fn=_renderer(name, body, defaults),
    )


def load_prompts(directory: Path) -> list[Prompt]:
    """Every prompt file of a directory, by file name."""
    if not directory.is_dir():
        return []
    return [load_prompt(path) for path in sorted(directory.glob("*.md"))]
