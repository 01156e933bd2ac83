"""Every command in README.md and docs/*.md runs, and every relative link resolves.

The docs are parsed, so a command added to a page later is checked without touching this file:

* In a ```bash fence every line (and every ``&&`` part of it) is a command:
  ``tinylm ...`` runs with ``--print_config`` appended (it parses and validates every argument, then exits
  before any work); ``python -m reproduce ...`` and ``python benchmarks/<x>.py ...`` run with ``--help``
  appended (argparse checks the arguments before it, e.g. the experiment name and ``--scale``). A line that
  already ends in ``--help`` or ``--print_config`` runs as written. The README's two fresh-machine commands
  (venv + pip install + the main job / the tests) are compared with ``.ci/run`` instead of being run; install
  lines anywhere else, and any other kind of line, fail: add a rule here.
* An inline `` `tinylm ...` `` or `` `python -m reproduce ...` `` span in prose or a table may hold placeholders
  (``...``, ``<experiment>``, ``DIR``): its subcommand must exist and each ``--option`` it names must appear in
  that subcommand's ``--help``.

``tinylm`` is run as the console script that pyproject.toml declares (``[project.scripts]``), with this checkout
first on the path. One subprocess imports torch and Lightning once and forks a child per distinct command line,
a few at a time, so the ~40 commands take seconds rather than minutes.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from functools import cache
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
README_MAX_LINES = 150
PARAGRAPH_MAX_CHARS = 400
TIMEOUT = 300  # the whole batch; each command gets 120 s

FENCE = re.compile(r"^```([^\n`]*)\n(.*?)^```[ \t]*$", re.MULTILINE | re.DOTALL)
CODE_SPAN = re.compile(r"(?<!`)`([^`\n]+)`(?!`)")
LINK = re.compile(r"!?\[[^\]\n]*\]\(([^)\s]+)\)")
PLACEHOLDER = re.compile(r"\.\.\.|…|[<>|\[\]]|^[A-Z][A-Z0-9_]*$")
INSTALL_STEPS = ("python3 -m venv", ". .venv/bin/activate", "pip install", "pytest")


def rel(path: Path) -> str:
    return str(path.relative_to(REPO))


def without_fences(text: str) -> str:
    """The page with its fenced blocks blanked out (line numbers kept)."""
    return FENCE.sub(lambda m: "\n" * m.group(0).count("\n"), text)


# ---------------------------------------------------------------------------------------------------------------
# Parsing the pages


def bash_lines(page: Path) -> list[str]:
    """The command lines of the page's ```bash / ```sh / ```shell fences, continuations joined, comments kept."""
    lines: list[str] = []
    for match in FENCE.finditer(page.read_text(encoding="utf-8")):
        if match.group(1).strip() not in ("bash", "sh", "shell", "console"):
            continue
        for line in match.group(2).replace("\\\n", " ").splitlines():
            line = line.strip()
            line = line.removeprefix("$ ")
            if line and not line.startswith("#"):
                lines.append(line)
    return lines


def split_steps(line: str) -> list[str]:
    """A command line's ``&&``-separated steps."""
    return [step.strip() for step in line.split("&&")]


def inline_commands(page: Path) -> list[str]:
    spans = CODE_SPAN.findall(without_fences(page.read_text(encoding="utf-8")))
    spans = [span.replace("\\|", "|").strip() for span in spans]
    return [s for s in spans if s == "tinylm" or s.startswith(("tinylm ", "python -m reproduce"))]


# ---------------------------------------------------------------------------------------------------------------
# Running


@cache
def tinylm_entry() -> str:
    """The ``module:function`` that pyproject.toml's ``[project.scripts]`` runs as ``tinylm``."""
    match = re.search(r'^\s*tinylm\s*=\s*"([\w.]+:\w+)"', (REPO / "pyproject.toml").read_text(), re.MULTILINE)
    assert match, "pyproject.toml declares no `tinylm` console script under [project.scripts]"
    return match.group(1)


def job_for(words: list[str]) -> tuple[str, ...] | None:
    """How to run a documented command's words (``tinylm ...``, ``python -m reproduce ...``, ...); None: no rule."""
    if words[0] == "tinylm":
        return ("entry", tinylm_entry(), *words[1:])
    if words[:3] == ["python", "-m", "reproduce"]:
        return ("module", "reproduce", *words[3:])
    if words[0] == "python" and len(words) > 1 and words[1].startswith("benchmarks/") and words[1].endswith(".py"):
        return ("path", str(REPO / words[1]), *words[2:])
    return None


# One subprocess imports the heavy libraries once, then forks a child per command (in parallel): each child sets
# sys.argv, runs the entry point, module or script, and exits with its status. A command costs ~1 s, not ~6 s.
RUNNER = r"""
import io, json, os, runpy, signal, sys, tempfile, traceback
for name in ("torch", "lightning", "lightning.pytorch", "jsonargparse", "transformers"):
    try:
        __import__(name)
    except Exception:
        pass
jobs = json.load(sys.stdin)
workers = max(1, int(os.environ.get("DOCS_WORKERS", "2")))

def child(kind, target, argv, out, err):
    signal.alarm(int(os.environ.get("DOCS_COMMAND_TIMEOUT", "120")))  # a hung command dies, the others go on
    for fd, path in ((1, out), (2, err)):
        os.dup2(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC), fd)
    sys.stdout = io.TextIOWrapper(os.fdopen(1, "wb", 0), write_through=True)
    sys.stderr = io.TextIOWrapper(os.fdopen(2, "wb", 0), write_through=True)
    code = 0
    try:
        if kind == "entry":
            module, function = target.split(":")
            sys.argv = ["tinylm", *argv]
            code = getattr(__import__(module, fromlist=[function]), function)()
        elif kind == "module":
            sys.argv = [target, *argv]
            runpy.run_module(target, run_name="__main__", alter_sys=True)
        else:
            sys.argv = [target, *argv]
            runpy.run_path(target, run_name="__main__")
    except SystemExit as stop:
        code = stop.code
    except BaseException:
        traceback.print_exc()
        code = 1
    if code is not None and not isinstance(code, int):
        print(code, file=sys.stderr)
        code = 1
    sys.stdout.flush(); sys.stderr.flush()
    os._exit(code or 0)

def read(path):
    with open(path, encoding="utf-8", errors="replace") as handle:
        text = handle.read()
    os.remove(path)
    return text

folder = tempfile.mkdtemp(prefix="tinylm-docs-")
results, running, queue = {}, {}, list(enumerate(jobs))
while queue or running:
    while queue and len(running) < workers:
        index, (kind, target, argv) = queue.pop(0)
        out, err = os.path.join(folder, f"{index}.out"), os.path.join(folder, f"{index}.err")
        pid = os.fork()
        if pid == 0:
            child(kind, target, argv, out, err)
        running[pid] = (index, out, err)
    pid, status = os.wait()
    index, out, err = running.pop(pid)
    results[index] = [os.waitstatus_to_exitcode(status), read(out), read(err)]
os.rmdir(folder)
print(json.dumps([results[i] for i in range(len(jobs))]))
"""


def run_all(jobs: list[tuple[str, ...]]) -> dict[tuple[str, ...], tuple[int, str, str]]:
    """(exit status, stdout, stderr) of every job ``(kind, target, *args)``: kind ``entry`` (``module:function``),
    ``module`` (``python -m``) or ``path`` (``python script.py``)."""
    env = dict(os.environ, PYTHONWARNINGS="ignore", DOCS_WORKERS=str(min(8, max(2, os.cpu_count() or 2))),
               PYTHONPATH=os.pathsep.join([str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])]))
    payload = json.dumps([[job[0], job[1], list(job[2:])] for job in jobs])
    done = subprocess.run([sys.executable, "-c", RUNNER], input=payload, cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=TIMEOUT, check=False)
    assert done.returncode == 0, f"the command runner failed:\n{done.stderr[-3000:]}"
    return {job: tuple(result) for job, result in zip(jobs, json.loads(done.stdout.splitlines()[-1]))}


def checked_form(words: list[str]) -> list[str]:
    """The documented command as it is checked: validated and stopped before it does any work."""
    if words[-1] in ("--help", "-h", "--print_config"):
        return words
    return [*words, "--print_config"] if words[0] == "tinylm" else [*words, "--help"]


def command_words(text: str) -> list[str]:
    return shlex.split(text, comments=True)


def subcommand(words: list[str]) -> list[str]:
    """The leading command words: ``tinylm tokenizer count --x`` → ``tinylm tokenizer count``."""
    start = 1 if words[0] == "tinylm" else 3
    out = words[:start]
    for word in words[start:]:
        if word.startswith("-") or PLACEHOLDER.search(word):
            break
        out.append(word)
    return out


def collect() -> tuple[list[tuple[str, str]], list[tuple[str, str]], list[str]]:
    """(page, fenced step) to run; (page, inline span) to check; the README's install lines."""
    fenced, inline, installs = [], [], []
    for page in PAGES:
        for line in bash_lines(page):
            steps = split_steps(line)
            if any(step.startswith(INSTALL_STEPS) for step in steps):
                assert page.name == "README.md" and page.parent == REPO, \
                    f"{rel(page)}: install commands belong in the README only (checked against .ci/run): {line}"
                installs.append(line)
                steps = [s for s in steps if not s.startswith(INSTALL_STEPS)]
            fenced += [(rel(page), step) for step in steps]
        inline += [(rel(page), span) for span in inline_commands(page)]
    return fenced, inline, installs


FENCED, INLINE, INSTALLS = collect()


@pytest.fixture(scope="module")
def results() -> dict[tuple[str, ...], tuple[int, str, str]]:
    """Every distinct command the checks need, run once."""
    wanted = {job_for(checked_form(command_words(step))) for _, step in FENCED}
    wanted |= {job_for([*subcommand(command_words(span)), "--help"]) for _, span in INLINE}
    wanted |= {job_for([*subcommand(command_words(step)), "--help"]) for _, step in FENCED if step.startswith("tinylm")}
    return run_all(sorted(job for job in wanted if job))


def test_the_pages_hold_commands():
    """The parser still finds the commands (a changed fence style would otherwise check nothing)."""
    assert len(FENCED) >= 10 and len(INLINE) >= 5 and len(INSTALLS) == 2, (len(FENCED), len(INLINE), INSTALLS)


def required_options(help_text: str) -> list[str]:
    """The options a jsonargparse usage line lists outside brackets (``--source`` in ``[--x X] --source SOURCE``)."""
    usage = help_text.split("\n\n")[0]
    while re.search(r"\[[^\[\]]*\]", usage):
        usage = re.sub(r"\[[^\[\]]*\]", " ", usage)
    return re.findall(r"--(\w+)", usage)


@pytest.mark.parametrize("page, step", FENCED, ids=[f"{p}: {s[:70]}" for p, s in FENCED])
def test_fenced_command_runs(results, page, step):
    words = command_words(step)
    job = job_for(checked_form(words))
    assert job, f"{page}: no rule to check `{step}`; add one to tests/test_docs.py"
    code, out, err = results[job]
    assert code == 0, f"{page}: `{step}` failed as `{shlex.join(checked_form(words))}` (exit {code}):\n{err[-3000:]}"
    if words[0] == "tinylm" and checked_form(words)[-1] == "--print_config" and words[-1] != "--print_config":
        # --print_config validates every value given but not that the required ones are given: check the printout
        config = yaml.safe_load(out) or {}
        missing = [name for name in required_options(results[job_for([*subcommand(words), "--help"])][1])
                   if config.get(name) is None]
        assert not missing, f"{page}: `{step}` lacks required option(s) {', '.join('--' + m for m in missing)}"


@pytest.mark.parametrize("page, span", INLINE, ids=[f"{p}: {s[:70]}" for p, s in INLINE])
def test_inline_command_names_a_real_subcommand_and_options(results, page, span):
    words = command_words(span)
    sub = subcommand(words)
    code, help_text, err = results[job_for([*sub, "--help"])]  # inline spans start with tinylm / python -m reproduce
    assert code == 0, f"{page}: `{span}`: `{shlex.join(sub)}` is not a command (exit {code}): {err[-1500:]}"
    for word in words[len(sub):]:
        if word.startswith("--"):
            option = word.split("=")[0].split(".")[0]
            assert re.search(rf"(?<![\w-]){re.escape(option)}(?![\w-])", help_text), \
                f"{page}: `{span}`: `{shlex.join(sub)} --help` has no option {option}"


# ---------------------------------------------------------------------------------------------------------------
# The fresh-machine commands


def ci_command() -> str:
    lines = [line.strip() for line in (REPO / ".ci" / "run").read_text().splitlines()
             if line.strip().startswith("python3 -m venv")]
    assert len(lines) == 1, ".ci/run must hold exactly one `python3 -m venv ...` install-and-test line"
    return lines[0]


def test_readme_test_command_is_exactly_what_ci_runs():
    tests = [line for line in INSTALLS if line.endswith("pytest -q")]
    assert tests == [ci_command()], "the README's install-and-test command must equal the line .ci/run runs"


def test_readme_main_job_installs_what_ci_installs():
    """The main job's install steps are the CI's, without `-q` and the `test` extra; its last step is run above."""
    (main,) = [line for line in INSTALLS if not line.endswith("pytest -q")]
    main_steps, ci_steps = main.split(" && "), ci_command().split(" && ")
    expected = [" ".join(w for w in step.split() if w != "-q").replace("'.[test,pretrained]'", "'.[pretrained]'")
                for step in ci_steps[:-1]]
    assert main_steps[:-1] == expected
    assert main_steps[-1] == "python -m reproduce all --scale smoke"


# ---------------------------------------------------------------------------------------------------------------
# Links and shape


def github_anchor(heading: str) -> str:
    text = re.sub(r"[`*_]|\[([^\]]*)\]\([^)]*\)", r"\1", heading.strip().lower())
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(page: Path) -> set[str]:
    headings = re.findall(r"^#{1,6}\s+(.+?)\s*#*\s*$", without_fences(page.read_text(encoding="utf-8")), re.MULTILINE)
    explicit = re.findall(r"<a\s+(?:id|name)=\"([^\"]+)\"", page.read_text(encoding="utf-8"))
    return {github_anchor(h) for h in headings} | set(explicit)


LINKS = [(page, target) for page in PAGES
         for match in LINK.finditer(CODE_SPAN.sub("", without_fences(page.read_text(encoding="utf-8"))))
         for target in [match.group(1)]
         if not re.match(r"^[a-z][a-z0-9+.-]*:", target)]


@pytest.mark.parametrize("page, target", LINKS, ids=[f"{rel(p)} -> {t}" for p, t in LINKS])
def test_relative_link_resolves(page, target):
    path_part, _, anchor = target.partition("#")
    path = (page.parent / path_part).resolve() if path_part else page
    assert path.exists(), f"{rel(page)}: link {target} points to a missing file"
    assert REPO in path.parents or path == REPO, f"{rel(page)}: link {target} leaves the repository"
    if anchor and path.suffix == ".md":
        assert anchor in anchors(path), f"{rel(page)}: link {target}: no heading with anchor #{anchor}"


def test_every_docs_page_is_linked_from_the_readme():
    linked = {(REPO / t.partition("#")[0]).resolve() for p, t in LINKS if p.name == "README.md" and p.parent == REPO}
    missing = [rel(p) for p in PAGES[1:] if p.resolve() not in linked]
    assert not missing, f"docs pages the README does not link: {missing}"


def test_readme_is_short_and_scannable():
    text = (REPO / "README.md").read_text(encoding="utf-8")
    assert len(text.splitlines()) <= README_MAX_LINES
    blocks = re.split(r"\n\s*\n|\n(?=- )", without_fences(text))
    long = [b[:80] for b in blocks if len(" ".join(b.split())) > PARAGRAPH_MAX_CHARS and not b.lstrip().startswith("|")]
    assert not long, f"README paragraphs over {PARAGRAPH_MAX_CHARS} characters: {long}"
