"""The documentation: README fits a first screen, the site builds with warnings as errors, every public name
has a docstring and an entry in the API reference, and the built pages show their images in a real browser."""

from __future__ import annotations

import fcntl
import importlib
import inspect
import json
import os
import re
import select
import shutil
import subprocess
import sys
import time
from functools import cached_property
from pathlib import Path

import griffe
import pytest

from conftest import ROOT
from docblocks import code_block

PUBLIC_MODULES = ("lt_tuning", "lt_tuning.data", "lt_tuning.metrics")
CHROMIUM = Path("/usr/bin/chromium")
# Debian's Chromium, headless, on a closed network: nothing of its own goes out (see .ci/run)
CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync")


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> subprocess.CompletedProcess:
    """README's `mkdocs build --strict`, into a temporary folder (``.site_dir``)."""
    site_dir = tmp_path_factory.mktemp("site")
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1", "PYTHONDONTWRITEBYTECODE": "1"}  # nothing written into docs/
    # not --quiet: it hides the warnings from --strict, which then counts none (a broken link passes)
    done = subprocess.run([str(Path(sys.executable).with_name("mkdocs")), "build", "--strict", "--site-dir", str(site_dir)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    done.site_dir = site_dir
    return done


def test_readme_fits_a_first_screen_and_names_the_docs_build():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert len(readme.splitlines()) <= 200
    assert "mkdocs build --strict" in code_block("README.md", "mkdocs build")
    # README's install and test commands are what CI runs
    ci = (ROOT / ".ci/run").read_text(encoding="utf-8")
    for line in code_block("README.md", "pip install").splitlines()[1:]:
        assert line.replace("pip install ", "python -m pip install -q ") in ci, line
    assert "\npython -m pytest -q\n" in ci and code_block("README.md", "pytest") == "python -m pytest -q\n"


def test_site_builds_with_warnings_as_errors(site):
    assert site.returncode == 0, site.stderr[-3000:]
    assert "WARNING" not in site.stderr and "Documentation built in" in site.stderr  # warnings were logged, none came
    for page in [*ROOT.joinpath("docs").rglob("*.md")]:
        if page.parent.name != "images":  # the generated tables that pages include
            built = site.site_dir / page.relative_to(ROOT / "docs").with_suffix(".html")
            assert built.is_file(), built
    # the API reference renders the docstrings, and the pages include README's and the benchmarks' parts
    assert "The user's own long-tailed data" in (site.site_dir / "api/index.html").read_text(encoding="utf-8")
    assert "Measured here (seed 775" in (site.site_dir / "getting-started.html").read_text(encoding="utf-8")
    assert "Kendall" in (site.site_dir / "study.html").read_text(encoding="utf-8")


def undocumented(package: str, modules: tuple[str, ...], search_path: Path) -> list[str]:
    """The public names of ``modules`` (their ``__all__``) that have no docstring, and the public methods
    and properties of their classes that have none and override nothing (an override shows its base's).
    Attributes are read as the site reads them (griffe: a string under the assignment is its docstring)."""
    loader = griffe.GriffeLoader(search_paths=[search_path])
    root = loader.load(package)
    loader.resolve_aliases(implicit=False, external=False)
    missing = []
    for module in modules:
        static = root if module == package else root[module.removeprefix(f"{package}.")]
        for name in importlib.import_module(module).__all__:
            target = static[name].final_target if static[name].is_alias else static[name]
            if not (target.docstring and target.docstring.value.strip()):
                missing.append(f"{module}.{name}")
            runtime = getattr(importlib.import_module(module), name)
            if inspect.isclass(runtime):
                for member, value in vars(runtime).items():
                    methodlike = inspect.isfunction(value) or isinstance(
                        value, (property, cached_property, staticmethod, classmethod))
                    inherited = any(hasattr(base, member) for base in runtime.__mro__[1:])
                    if not member.startswith("_") and methodlike and not inherited and not (value.__doc__ or "").strip():
                        missing.append(f"{module}.{name}.{member}")
    return missing


def test_every_public_name_has_a_docstring():
    assert undocumented("lt_tuning", PUBLIC_MODULES, ROOT) == []


def test_a_name_without_a_docstring_is_found(tmp_path, monkeypatch):
    (tmp_path / "undoc_pkg").mkdir()
    (tmp_path / "undoc_pkg" / "__init__.py").write_text('''"""A package with gaps."""
import json
__all__ = ["C", "LIMIT", "f"]
LIMIT = 3
def f(): return 1
class C(json.JSONEncoder):
    """Documented."""
    def default(self, o): return str(o)
    def extra(self): return 2
    @property
    def size(self):
        """Documented."""
        return 3
''', encoding="utf-8")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert undocumented("undoc_pkg", ("undoc_pkg",), tmp_path) == ["undoc_pkg.C.extra", "undoc_pkg.LIMIT", "undoc_pkg.f"]


def test_the_api_reference_lists_every_public_name():
    documented = set()
    for page in (ROOT / "docs/api").glob("*.md"):
        documented |= set(re.findall(r"^::: (\S+)$", page.read_text(encoding="utf-8"), re.M))
    top = importlib.import_module("lt_tuning")
    expected = set()
    for module in PUBLIC_MODULES:
        for name in importlib.import_module(module).__all__:
            # a name lt_tuning exports itself is documented once, under lt_tuning
            same = name in top.__all__ and getattr(top, name) is getattr(importlib.import_module(module), name)
            expected.add(f"lt_tuning.{name}" if same else f"{module}.{name}")
    assert documented == expected


class Chromium:
    """Headless Chromium driven over its DevTools protocol on a pipe (``--remote-debugging-pipe``: commands
    in on fd 3, replies and events out on fd 4, each a JSON message ended by a NUL byte)."""

    def __init__(self, profile: Path) -> None:
        to_browser, self._commands = os.pipe()
        self._replies, from_browser = os.pipe()
        # the browser's ends at fds >= 10, which bash then moves to 3 and 4 (no clash, no preexec_fn)
        ends = [fcntl.fcntl(fd, fcntl.F_DUPFD, 10) for fd in (to_browser, from_browser)]
        for fd in (to_browser, from_browser):
            os.close(fd)
        self.process = subprocess.Popen(
            ["/bin/bash", "-c", f'exec "$@" 3<&{ends[0]} 4>&{ends[1]} {ends[0]}<&- {ends[1]}>&-', "bash", str(CHROMIUM),
             *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "--remote-debugging-pipe", "about:blank"],
            pass_fds=ends, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for fd in ends:
            os.close(fd)
        self._buffer, self._next_id = b"", 0
        target = self.call("Target.createTarget", url="about:blank")["targetId"]
        self.session = self.call("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
        self.call("Page.enable", session=True)

    def _message(self, deadline: float) -> dict:
        while b"\0" not in self._buffer:
            if not select.select([self._replies], [], [], max(0.0, deadline - time.monotonic()))[0]:
                raise TimeoutError("Chromium did not answer in time")
            chunk = os.read(self._replies, 1 << 16)
            if not chunk:
                raise RuntimeError("Chromium closed its pipe")
            self._buffer += chunk
        message, self._buffer = self._buffer.split(b"\0", 1)
        return json.loads(message)

    def call(self, method: str, session: bool = False, wait_for: str | None = None, **params) -> dict:
        """Sends a command and returns its result; with ``wait_for``, also waits for that event."""
        self._next_id += 1
        command = {"id": self._next_id, "method": method, "params": params}
        if session:
            command["sessionId"] = self.session
        os.write(self._commands, json.dumps(command).encode() + b"\0")
        result, event, deadline = None, wait_for is None, time.monotonic() + 60
        while result is None or not event:
            message = self._message(deadline)
            if message.get("id") == self._next_id:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                result = message["result"]
            event = event or message.get("method") == wait_for
        return result

    def image_widths(self, url: str) -> list[tuple[str, int]]:
        """Each ``<img>`` of the page at ``url`` once it has loaded: its ``src`` and ``naturalWidth``."""
        self.call("Page.navigate", session=True, wait_for="Page.loadEventFired", url=url)
        answer = self.call("Runtime.evaluate", session=True, returnByValue=True,
                           expression="[...document.images].map(image => [image.src, image.naturalWidth])")
        return [tuple(pair) for pair in answer["result"]["value"]]

    def close(self) -> None:
        os.close(self._commands)  # Chromium exits when its command pipe closes
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        os.close(self._replies)


@pytest.fixture
def chromium(tmp_path):
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is absent: install Debian's chromium (apt-get install chromium, as .ci/run does)")
    browser = Chromium(tmp_path / "profile")
    yield browser
    browser.close()


def test_the_built_pages_show_their_images_in_chromium(site, chromium, tmp_path):
    assert site.returncode == 0, site.stderr[-3000:]
    for page in ("index", "diagnosing"):
        figures = (ROOT / "docs" / f"{page}.md").read_text(encoding="utf-8").count("![")
        images = chromium.image_widths((site.site_dir / f"{page}.html").as_uri())
        assert len(images) >= figures > 0, (page, images)
        assert all(width > 0 for _, width in images), (page, images)
    # the check sees a broken image: a page whose PNG is not one
    shutil.copy(ROOT / "docs/images/per_class_f1.png", tmp_path / "good.png")
    (tmp_path / "bad.png").write_bytes(b"not a png")
    (tmp_path / "page.html").write_text('<img src="good.png"><img src="bad.png">', encoding="utf-8")
    widths = dict(chromium.image_widths((tmp_path / "page.html").as_uri()))
    assert widths[(tmp_path / "good.png").as_uri()] > 0 and widths[(tmp_path / "bad.png").as_uri()] == 0
