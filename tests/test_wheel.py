"""The package as users install it: a wheel built from this checkout, installed (not editable)
into a fresh virtual environment, run as ``n2g-mcp`` over stdio from another folder.

The fresh environment takes its third-party dependencies from the one running the tests (a
``.pth`` line naming its site-packages, whose own ``.pth`` files, the editable install among
them, are not run), so no download is needed; n2g-mcp itself comes only from the wheel, which
the first test checks. Marked ``wheel`` (about 15 s: the build, then two servers).
"""

from __future__ import annotations

import os
import shutil
import site
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest
from mcp import Client
from mcp.client.stdio import StdioServerParameters

pytestmark = [pytest.mark.wheel, pytest.mark.anyio]

ROOT = Path(__file__).resolve().parent.parent
SOURCES = ["pyproject.toml", "README.md", "builder", "store", "n2g_mcp", "prompts", "data"]
"""What the wheel is built from (a copy, so the build leaves nothing in the checkout)."""
PROMPTS = sorted(p.stem for p in (ROOT / "prompts").glob("*.md"))


def _run(*cmd: str | Path, **kw) -> subprocess.CompletedProcess:
    done = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, **kw)
    assert done.returncode == 0, f"{cmd}:\n{done.stdout}\n{done.stderr}"
    return done


@pytest.fixture(scope="module")
def venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh virtual environment with the wheel of this checkout installed in it."""
    root = tmp_path_factory.mktemp("wheel")
    src = root / "src"
    for name in SOURCES:
        if (ROOT / name).is_dir():
            shutil.copytree(ROOT / name, src / name, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
        else:
            src.mkdir(exist_ok=True)
            shutil.copy(ROOT / name, src / name)
    _run(sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--quiet",
         "-w", root / "dist", src)
    [wheel] = (root / "dist").glob("n2g_mcp-*.whl")
    env = root / "venv"
    _run(sys.executable, "-m", "venv", "--without-pip", env)
    python = env / "bin" / "python"
    # Without PYTHONPATH: pip would find the checkout on it and take the package as installed.
    _run(sys.executable, "-m", "pip", "--python", python, "install", "--no-deps", "--no-index", "--quiet", wheel,
         env=clean_env())
    purelib = Path(_run(python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))").stdout.strip())
    ours = {sysconfig.get_path("purelib"), *site.getsitepackages()}
    (purelib / "_n2g_test_deps.pth").write_text("".join(f"{p}\n" for p in sorted(ours)))
    return env


def clean_env(**extra: str) -> dict[str, str]:
    """This process's environment without what would put the checkout on the import path."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "N2G_STORES", "VIRTUAL_ENV")}
    return env | extra


def test_the_installed_package_comes_from_the_wheel_with_every_subpackage_and_its_data(venv, tmp_path) -> None:
    check = """
import importlib, pkgutil, sys
import builder, n2g_mcp, store
from n2g_mcp.paths import default_stores_dir, from_checkout, prompts_dir
for package in (builder, n2g_mcp, store):
    for module in pkgutil.walk_packages(package.__path__, package.__name__ + "."):
        if module.ispkg:
            importlib.import_module(module.name)
from builder.corpus import DEFAULT_CORPUS
print(n2g_mcp.__file__, store.__file__, builder.__file__, sep="\\n")
print(from_checkout(), prompts_dir(), DEFAULT_CORPUS.is_file(), default_stores_dir(), sep="\\n")
"""
    out = _run(venv / "bin" / "python", "-c", check, cwd=tmp_path,
               env=clean_env(XDG_DATA_HOME=str(tmp_path / "data"))).stdout.splitlines()
    *files, checkout, prompts, corpus, stores = out
    for file in files:
        assert Path(file).is_relative_to(venv), f"{file} is not the wheel's copy"
    assert checkout == "False" and corpus == "True"
    assert Path(prompts).is_relative_to(venv) and sorted(p.stem for p in Path(prompts).glob("*.md")) == PROMPTS
    assert stores == str(tmp_path / "data" / "n2g-mcp" / "stores")


async def test_the_installed_server_serves_the_shipped_stores_over_stdio(venv, tmp_path) -> None:
    params = StdioServerParameters(command=str(venv / "bin" / "n2g-mcp"), args=["--stores", str(ROOT / "stores")],
                                   env=clean_env(), cwd=str(tmp_path))
    async with Client(params) as client:
        listed = await client.call_tool("list_models", {})
        assert not listed.is_error, listed.content[0].text
        graphs = {m["model"]: m["graphs"] for m in listed.structured_content["models"]}
        assert graphs["smollm2-135m"] > 0 and graphs["gemma3-270m"] > 0, graphs
        assert listed.structured_content["stores_dir"] == str(ROOT / "stores")
        found = await client.call_tool("search_graphs", {"layer": 0, "limit": 5})
        assert not found.is_error, found.content[0].text
        hits = found.structured_content["results"]
        assert hits and all(h["id"].startswith("L0/") for h in hits)
        graph = await client.call_tool("get_graph", {"layer": 0, "neuron": int(hits[0]["neuron"])})
        assert not graph.is_error and not graph.structured_content["warnings"], graph.content[0].text
        prompts = sorted(p.name for p in (await client.list_prompts()).prompts)
        assert prompts == PROMPTS


async def test_an_installed_server_without_stores_says_where_it_looked_and_how_to_point_it(venv, tmp_path) -> None:
    stores = tmp_path / "data" / "n2g-mcp" / "stores"  # the installed default, not made
    params = StdioServerParameters(command=str(venv / "bin" / "n2g-mcp"), args=[],
                                   env=clean_env(XDG_DATA_HOME=str(tmp_path / "data")), cwd=str(tmp_path))
    async with Client(params) as client:
        listed = await client.call_tool("list_models", {})
        assert not listed.is_error and listed.structured_content["stores_dir"] == str(stores)
        text = listed.content[0].text
        assert f"no store files in {stores}" in text and "--stores DIR" in text and "N2G_STORES" in text
        refused = await client.call_tool("search_graphs", {"activating": [" except"]})
        assert refused.is_error
        message = refused.content[0].text
        assert str(stores) in message and "--stores DIR" in message and "build_graph" in message
    assert not stores.exists()
