"""Guards for the packaging traps described in DEVELOPERS.md ("Packaging traps").

`backends/` and `cli/` are installed as `onnx2snn.backends` and `onnx2snn.cli` through setuptools'
`package-dir`, with an explicit `packages` list. The editable install used for development forgives
mistakes that the wheel a user installs does not, so these tests check the list and the wheel.
"""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

if sys.version_info >= (3, 11):
    import tomllib
else:
    import tomli as tomllib

import onnx2snn

ROOT = Path(__file__).resolve().parent.parent
# Source folder -> the package name it installs as (mirrors [tool.setuptools] package-dir).
ROOTS = {"onnx2snn": "onnx2snn", "backends": "onnx2snn.backends", "cli": "onnx2snn.cli"}
SKIP_DIRS = {"__pycache__"}


def _pyproject() -> dict:
    with open(ROOT / "pyproject.toml", "rb") as f:
        return tomllib.load(f)


def _source_dirs() -> dict[str, Path]:
    """Every folder below the package roots that is part of the package tree, by package name."""
    found: dict[str, Path] = {}
    for folder, package in ROOTS.items():
        base = ROOT / folder
        for dirpath, dirnames, _ in os.walk(base):
            keep = [d for d in dirnames if d not in SKIP_DIRS and not d.startswith(".")]
            dirnames[:] = sorted(keep)
            rel = Path(dirpath).relative_to(base)
            found[".".join([package, *rel.parts])] = Path(dirpath)
    return found


def _listed_packages() -> list[str]:
    return _pyproject()["tool"]["setuptools"]["packages"]


def _packages_on_disk() -> set[str]:
    return {name for name, path in _source_dirs().items() if (path / "__init__.py").is_file()}


def test_package_dir_mapping_matches_layout():
    setuptools_cfg = _pyproject()["tool"]["setuptools"]
    assert setuptools_cfg["package-dir"] == {package: folder for folder, package in ROOTS.items()}
    assert "find" not in str(setuptools_cfg.get("packages")), "packages.find drops mapped folders"


def test_packages_list_equals_folders_with_init():
    """A sub-package missing from `packages` works editable but vanishes from the wheel."""
    on_disk = _packages_on_disk()
    listed = _listed_packages()
    assert len(listed) == len(set(listed)), "duplicates in [tool.setuptools] packages"
    missing = sorted(on_disk - set(listed))
    stale = sorted(set(listed) - on_disk)
    assert not missing and not stale, (
        "pyproject.toml [tool.setuptools] packages is out of date.\n"
        f"  add (folder has __init__.py): {missing}\n"
        f"  remove (no such package):     {stale}"
    )


def test_no_namespace_packages():
    """A folder with .py files but no __init__.py would be left out of the wheel silently."""
    bare = sorted(
        str(path.relative_to(ROOT))
        for path in _source_dirs().values()
        if any(path.glob("*.py")) and not (path / "__init__.py").is_file()
    )
    assert not bare, f"add an __init__.py (and list the package in pyproject.toml) to: {bare}"


def test_no_tests_init():
    """A tests/__init__.py makes tests of an installed wheel import the source tree instead."""
    assert not (ROOT / "tests" / "__init__.py").exists()


def test_no_bare_cli_or_backends_imports():
    """From the repo root `import cli` gives a second copy of the module; use onnx2snn.cli."""
    offenders = []
    for folder in [*ROOTS, "tests", "benchmarks", "models"]:
        for path in sorted((ROOT / folder).rglob("*.py")):
            if SKIP_DIRS & set(path.parts):
                continue
            tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
            for node in ast.walk(tree):
                if isinstance(node, ast.Import):
                    names = [alias.name for alias in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    names = [node.module]
                else:
                    continue
                for name in names:
                    if name.split(".")[0] in {"cli", "backends"}:
                        offenders.append(f"{path.relative_to(ROOT)}:{node.lineno}: {name}")
    assert not offenders, "import onnx2snn.cli / onnx2snn.backends instead:\n" + "\n".join(
        offenders
    )


def test_installed_metadata_matches_source_version():
    """The version is dynamic: an editable install freezes it until reinstalled (./dev does)."""
    from importlib.metadata import version

    assert version("onnx2snn") == onnx2snn.__version__, "reinstall: ./dev setup"


def _run(args: list[str], **kwargs) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, timeout=300, **kwargs)


def _console_script() -> str:
    script = shutil.which("onnx2snn", path=str(Path(sys.executable).parent))
    assert script, f"no onnx2snn console script next to {sys.executable}: run ./dev setup"
    return script


def test_python_m_version():
    res = _run([sys.executable, "-m", "onnx2snn", "--version"], cwd=ROOT.parent)
    assert res.returncode == 0, res.stderr
    assert onnx2snn.__version__ in res.stdout


def test_console_script_version():
    res = _run([_console_script(), "--version"], cwd=ROOT.parent)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == f"onnx2snn, version {onnx2snn.__version__}"


def test_console_script_help():
    res = _run([_console_script(), "--help"], cwd=ROOT.parent)
    assert res.returncode == 0, res.stderr
    assert "Usage: onnx2snn" in res.stdout


@pytest.mark.slow
def test_wheel_contains_every_package_and_imports_in_isolation(tmp_path):
    """Build the wheel a user would get, install it alone, import it away from the source tree."""
    # Build from a copy: setuptools writes build/ and *.egg-info next to the sources, and a stale
    # build/lib can smuggle deleted modules into the wheel (or race with a colleague's build).
    src = tmp_path / "src"
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")
    for folder in ROOTS:
        shutil.copytree(ROOT / folder, src / folder, ignore=ignore)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, src / name)
    wheels = tmp_path / "wheels"
    res = _run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
         "--disable-pip-version-check", "-w", str(wheels), str(src)]
    )  # fmt: skip
    assert res.returncode == 0, res.stdout + res.stderr
    (wheel,) = wheels.glob("onnx2snn-*.whl")
    assert wheel.name.startswith(f"onnx2snn-{onnx2snn.__version__}-")

    names = set(zipfile.ZipFile(wheel).namelist())
    # Both what pyproject.toml lists and what exists on disk: this test fails on its own when a
    # sub-package is missing from the list, not only through the list guard above.
    packages = sorted(set(_listed_packages()) | _packages_on_disk())
    missing = [p for p in packages if f"{p.replace('.', '/')}/__init__.py" not in names]
    assert not missing, f"packages missing from the wheel: {missing}"
    tops = {n.split("/")[0] for n in names if not n.split("/")[0].endswith((".dist-info", ".data"))}
    assert tops == {"onnx2snn"}, f"the wheel must install only onnx2snn/, got {sorted(tops)}"
    entry_points = next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
    assert "onnx2snn = onnx2snn.cli.main:main" in zipfile.ZipFile(wheel).read(entry_points).decode()

    target = tmp_path / "site"
    res = _run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "--disable-pip-version-check",
         "--target", str(target), str(wheel)]
    )  # fmt: skip
    assert res.returncode == 0, res.stdout + res.stderr

    # `-S` skips site-packages processing, so the editable install's import hook (a .pth file)
    # cannot quietly fill in what the wheel lacks; dependencies come in through PYTHONPATH after
    # the wheel. cwd is outside the source tree so that '' on sys.path does not find it either.
    import site

    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    env["PYTHONPATH"] = os.pathsep.join([str(target), *site.getsitepackages()])
    modules = ["onnx2snn.cli.main", *packages]
    check = (
        "import importlib, pathlib, sys\n"
        f"target = pathlib.Path({str(target)!r}).resolve()\n"
        f"for name in {modules!r}:\n"
        "    mod = importlib.import_module(name)\n"
        "    where = pathlib.Path(mod.__file__).resolve()\n"
        "    assert target in where.parents, f'{name} imported from {where}, not the wheel'\n"
        "print('ok')\n"
    )
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    res = _run([sys.executable, "-S", "-c", check], cwd=outside, env=env)
    assert res.returncode == 0 and res.stdout.strip() == "ok", res.stdout + res.stderr

    res = _run([sys.executable, "-S", "-m", "onnx2snn", "--version"], cwd=outside, env=env)
    assert res.returncode == 0, res.stderr
    assert onnx2snn.__version__ in res.stdout
