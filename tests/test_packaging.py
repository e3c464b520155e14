"""The wheel holds every module, and works installed on its own.

The editable install finds any folder, but a wheel holds only the packages
``[tool.setuptools] packages`` lists (DESIGN.md section 2), so a forgotten
nested package passes every other test and breaks for users. This test
builds the wheel, installs it into a fresh venv and imports every module
from there, with ``synaptic_mesh`` coming from the wheel, not the checkout.

Choices: the wheel is built from a clean copy of the repository (no
``build/``, ``.venv``, caches) so that a stale ``build/lib`` cannot smuggle a
module into the wheel and concurrent runs do not share a build directory.
The fresh venv gets the dependencies by a ``.pth`` line naming this
interpreter's site-packages: a plain path line does not run the editable
install's finder, so the checkout stays invisible there.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import tomllib
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
IGNORE = shutil.ignore_patterns(
    ".git",
    ".venv",
    "build",
    "dist",
    "*.egg-info",
    "__pycache__",
    ".pytest_cache",
    ".ruff_cache",
    ".hypothesis",
    "bench-results",
)

IMPORT_ALL = """
import importlib, json, pkgutil, sys
import synaptic_mesh
pkg_dir = synaptic_mesh.__path__[0]
imported, errors = [], {}
def onerror(name):
    errors[name] = repr(sys.exc_info()[1])
for info in pkgutil.walk_packages([pkg_dir], "synaptic_mesh.", onerror=onerror):
    if info.name.rsplit(".", 1)[-1] == "__main__":
        continue  # running it is the command itself
    try:
        importlib.import_module(info.name)
        imported.append(info.name)
    except Exception as exc:
        errors[info.name] = repr(exc)
print(json.dumps({"file": synaptic_mesh.__file__, "imported": imported, "errors": errors}))
"""


def run(args: list[str], cwd: Path, **kwargs: object) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "PIP_"))}
    env |= {"PYTHONNOUSERSITE": "1", "PIP_NO_INDEX": "1", "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    result = subprocess.run(
        args, cwd=cwd, env=env, capture_output=True, text=True, timeout=50, **kwargs
    )
    assert result.returncode == 0, f"{args} failed:\n{result.stdout}\n{result.stderr}"
    return result


def expected_files() -> set[str]:
    """Wheel paths of every module in the folders pyproject.toml maps, nested packages too."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    package_dir: dict[str, str] = config["tool"]["setuptools"]["package-dir"]
    files = set()
    for package, folder in package_dir.items():
        base = ROOT / folder
        for init in base.rglob("__init__.py"):
            pkg = init.parent
            if not all((base / p / "__init__.py").exists() for p in pkg.relative_to(base).parents):
                continue  # under a folder without __init__.py: not a subpackage
            for module in pkg.glob("*.py"):
                rel = module.relative_to(base).as_posix()
                files.add(f"{package.replace('.', '/')}/{rel}")
    return files


@pytest.mark.timeout(60)
def test_wheel_installs_and_imports_everything(tmp_path: Path) -> None:
    source = tmp_path / "src"
    shutil.copytree(ROOT, source, ignore=IGNORE, symlinks=True)
    dist = tmp_path / "dist"
    build = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation"]
    run([*build, "-w", str(dist), "."], cwd=source)
    (wheel,) = dist.glob("synaptic_mesh-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())

    missing = sorted(expected_files() - names)
    assert not missing, f"modules missing from the wheel (list them in pyproject.toml): {missing}"
    assert "synaptic_mesh/py.typed" in names

    venv = tmp_path / "venv"
    run([sys.executable, "-m", "venv", "--without-pip", str(venv)], cwd=tmp_path)
    python = venv / "bin" / "python"
    if not python.exists():
        python = venv / "Scripts" / "python.exe"
    run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", str(wheel)],
        cwd=tmp_path,
    )
    site = run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        cwd=tmp_path,
    ).stdout.strip()
    ours = sysconfig.get_paths()
    lines = dict.fromkeys([ours["purelib"], ours["platlib"]])
    (Path(site) / "_outer_dependencies.pth").write_text("\n".join(lines) + "\n", encoding="utf-8")

    report = json.loads(run([str(python), "-c", IMPORT_ALL], cwd=tmp_path).stdout)
    assert Path(report["file"]).resolve().is_relative_to(venv.resolve()), report["file"]
    assert report["errors"] == {}
    in_wheel = {
        n[: -len(".py")].replace("/", ".").removesuffix(".__init__")
        for n in names
        if n.endswith(".py") and not n.endswith("__main__.py")
    }
    assert set(report["imported"]) == in_wheel - {"synaptic_mesh"}

    script = python.with_name("synaptic-mesh")
    version = run([str(script), "--version"], cwd=tmp_path).stdout
    assert version == "synaptic-mesh 0.1.0\n"
    transcript = run(
        [str(script), "run", str(ROOT / "examples" / "claude_gemini" / "deploy.toml")],
        cwd=tmp_path,
    ).stdout
    assert transcript.splitlines()[-1] == "scribe: 4 verdicts, 2 true, 2 false"
