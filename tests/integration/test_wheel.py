"""The wheel: built from this checkout, installed into a fresh virtualenv, run from outside the checkout.

maturin builds it into a temporary directory with the checkout's cargo target directory, which
scripts/bootstrap.sh's `maturin develop --release` has already filled, so only the packaging runs (a cold
cache compiles the Rust for minutes). pip installs it offline with `--no-deps`; its dependencies come from
this test environment's site-packages through one path line in a .pth file (a plain path: the .pth files
there, such as the editable install's pointer to the checkout, are not read). Then the installed `sluice`
serves the web client and strophe.js it carries.
"""

from __future__ import annotations

import configparser
import json
import os
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import aiohttp
import pytest

from signaling.web import STROPHE, WEB_DIR
from tests.helpers.serve import running_serve

REPO = Path(__file__).resolve().parents[2]
#: A cold build compiles the Rust; with bootstrap's cache the whole module takes seconds.
pytestmark = pytest.mark.timeout(900)

#: What the page loads, as the wheel must carry it (relative to signaling/webclient/).
CLIENT_FILES = sorted(
    {
        str(p.relative_to(WEB_DIR))
        for p in WEB_DIR.rglob("*")
        if p.is_file() and "node_modules" not in p.parts and not p.name.startswith("package")
    }
    | {STROPHE}
)


def _run(*cmd: str | Path, cwd: Path, timeout: float, env: dict[str, str] | None = None) -> str:
    out = subprocess.run(
        [str(c) for c in cmd], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )
    assert out.returncode == 0, f"{cmd} exited {out.returncode}:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}"
    return out.stdout


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    env = dict(os.environ)
    # cargo from rustup, also when pytest runs without scripts/test.sh's PATH.
    env["PATH"] = f"{Path.home() / '.cargo' / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    maturin = Path(sys.executable).with_name("maturin")
    # --frozen: Cargo.lock as it is and no network, like the rest of the suite.
    build = ("build", "--release", "--frozen", "-i", sys.executable, "-o", out)
    _run(maturin, *build, cwd=REPO, timeout=840, env=env)
    (built,) = out.glob("*.whl")
    return built


@pytest.fixture(scope="module")
def venv(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("venv")
    _run(sys.executable, "-m", "venv", "--without-pip", root, cwd=root, timeout=60)
    python = root / "bin" / "python"
    site = root / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}" / "site-packages"
    (site / "test-dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    _run(
        sys.executable, "-m", "pip", "--python", python, "install", "--no-deps", "--no-index",
        "--disable-pip-version-check", "-q", wheel, cwd=root, timeout=120,
    )  # fmt: skip
    return root


def test_the_wheel_carries_the_packages_and_only_the_client_files_the_page_loads(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")}
    assert tops == {"bridge", "signaling", "colibri2", "xmppclient", "sluice", "bench"}
    assert "bridge/_native.abi3.so" in names
    # The load generator is bench._native, its own project (native/benchpy): not in this wheel.
    assert [n for n in names if n.startswith("bench/_native")] == []
    client = sorted(
        n.removeprefix("signaling/webclient/") for n in names if n.startswith("signaling/webclient/")
    )
    assert client == CLIENT_FILES
    (entry_points,) = (n for n in names if n.endswith(".dist-info/entry_points.txt"))
    scripts = configparser.ConfigParser()
    scripts.read_string(zipfile.ZipFile(wheel).read(entry_points).decode())
    assert dict(scripts["console_scripts"]) == {"sluice": "sluice.cli:main"}


def test_the_installed_packages_are_the_venvs_not_the_checkouts(venv: Path, tmp_path: Path) -> None:
    code = (
        "import json, bridge._native, signaling.web, colibri2, sluice.cli, bench.run\n"
        "mods = (bridge._native, signaling.web, colibri2, sluice.cli, bench.run)\n"
        "print(json.dumps([m.__file__ for m in mods] + [str(signaling.web.WEB_DIR)]))\n"
    )
    paths = json.loads(_run(venv / "bin" / "python", "-c", code, cwd=tmp_path, timeout=60))
    assert [p for p in paths if not Path(p).is_relative_to(venv)] == []


def test_installed_sluice_bench_says_the_load_generator_is_missing(venv: Path, tmp_path: Path) -> None:
    scenario = tmp_path / "tiny.toml"
    scenario.write_text('name = "tiny"\nduration = "1s"\n[load]\nconferences = 1\nsenders = 2\n')
    out = subprocess.run(
        [venv / "bin" / "sluice", "bench", scenario, "--no-raw", "--out", tmp_path / "out"],
        cwd=tmp_path, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    # Refused before anything started (no bridge was spawned), naming what is missing and the cure.
    assert out.returncode == 2, out.stdout + out.stderr
    assert "bench._native" in out.stderr and "scripts/bootstrap.sh" in out.stderr, out.stderr


def test_installed_sluice_serve_help(venv: Path, tmp_path: Path) -> None:
    text = _run(venv / "bin" / "sluice", "serve", "--help", cwd=tmp_path, timeout=60)
    assert "--http-port" in text
    assert "--xmpp-port" in text


async def test_installed_sluice_serve_serves_the_page_config_and_strophe(venv: Path, tmp_path: Path) -> None:
    sluice = str(venv / "bin" / "sluice")
    async with (
        running_serve(tmp_path, command=(sluice,), cwd=tmp_path) as serve,
        aiohttp.ClientSession() as http,
    ):
        async with http.get(f"{serve.url}/") as resp:
            assert resp.status == 200
            assert await resp.read() == (WEB_DIR / "index.html").read_bytes()
        async with http.get(f"{serve.url}/config.json") as resp:
            assert resp.status == 200
            assert (await resp.json())["hosts"]["domain"] == "meet.sluice"
        async with http.get(f"{serve.url}/{STROPHE}") as resp:
            assert resp.status == 200
            assert await resp.read() == (WEB_DIR / STROPHE).read_bytes()
        async with http.get(f"{serve.url}/node_modules/strophe.js/package.json") as resp:
            assert resp.status == 404
    # Stopped by PID (SIGTERM): it shut down on its own.
    assert serve.proc.returncode == 0, "".join(serve.output)
