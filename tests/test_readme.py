"""The README keeps its promises: its API example runs, CI runs its test command, its paths exist.

The README is the front door: a newcomer copies the API example first, CI's rule is
"the README's test command, verbatim", and the reading guide and docs/ name files a
reader will open. Each of those goes stale silently when the code moves; these tests
make it loud.
"""
import contextlib
import io
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
DOCS = sorted((ROOT / "docs").glob("*.md"))


def _code_block(heading: str, language: str) -> str:
    """The first ```language block after the line ``heading``."""
    section = README[README.index(heading):]
    match = re.search(rf"```{language}\n(.*?)```", section, re.S)
    assert match, f"no ```{language} block after {heading!r}"
    return match.group(1)


def test_the_api_example_runs_and_prints_what_its_comments_say():
    code = _code_block("## The API in 15 lines", "python")
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(code, "README.md", "exec"), {"__name__": "readme_example"})
    assert out.getvalue().split("\n")[:2] == ["[[ 2. -4.  6.]]", "True"]


def test_ci_runs_the_readmes_test_command_verbatim():
    command = _code_block("Set up and run the tests", "bash").strip().split("\n")
    ci = (ROOT / ".ci" / "run").read_text().split("\n")
    marker = next(i for i, line in enumerate(ci) if "the README's test command, verbatim" in line)
    assert ci[marker + 1:marker + 1 + len(command)] == command


def test_every_file_the_readme_and_docs_name_exists():
    pattern = re.compile(r"(?<![\w/.])((?:minidl|tests|benchmarks|examples|docs|\.ci)/[\w/.-]*\w)")
    missing = []
    for page in [ROOT / "README.md", *DOCS]:
        for path in pattern.findall(page.read_text()):
            if "/runs/" not in f"/{path}" and "/results" not in path and not (ROOT / path).exists():
                missing.append(f"{page.relative_to(ROOT)}: {path}")
    assert not missing, missing
    links = re.compile(r"\]\(((?!https?:)[^)#]+)")
    for page in [ROOT / "README.md", *DOCS]:
        for target in links.findall(page.read_text()):
            assert (page.parent / target).exists(), f"{page.relative_to(ROOT)} links to a missing {target}"


def test_the_trainer_example_in_the_docs_trains_and_writes_its_files(tmp_path, monkeypatch):
    page = (ROOT / "docs" / "training.md").read_text()
    code = re.search(r"```python\n(.*?)```", page, re.S).group(1)
    monkeypatch.chdir(tmp_path)                  # it writes runs/mine/
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        namespace = {"__name__": "docs_training"}
        exec(compile(code, "docs/training.md", "exec"), namespace)
    assert len(namespace["history"]) == 3 and "epoch 3: lr" in out.getvalue()   # the callback of its own ran
    assert {"history.csv", "checkpoint.npz", "best.npz"} <= {p.name for p in (tmp_path / "runs" / "mine").iterdir()}
