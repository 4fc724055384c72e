"""The documentation points at things that exist (issue 16): every relative link in README.md and docs/*.md resolves
to a file inside the repository (and, for `page.md#anchor`, to a heading of that page), and every `repro VERB
[SUBVERB]` named in a code span or code block is a real command (`repro VERB [SUBVERB] --help` exits 0). The
commands are all checked in this one process with Typer's test runner, so the test takes about a second."""

from __future__ import annotations

import re
from pathlib import Path

import typer
from typer.testing import CliRunner

from conftest import ROOT

FENCE = re.compile(r"^[ \t]*(```|~~~)[^\n]*\n(.*?)^[ \t]*\1[ \t]*$", re.M | re.S)
INLINE = re.compile(r"`((?:[^`\n]|\n(?![ \t]*\n))+)`")  # a span may wrap onto the next line, not past a blank one
LINK = re.compile(r"!?\[[^\]\n]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
HEADING = re.compile(r"^#{1,6}[ \t]+(.+?)[ \t]*#*[ \t]*$", re.M)
SCHEME = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:")
# `repro` as a command word (not repro.cli, src/repro/, .venv/bin/repro or repro-weights), then one or two words;
# a lookahead, so that `podman run --rm repro repro models list` yields both `repro repro ...` and `repro models list`.
COMMAND = re.compile(r"(?<![\w./$-])repro(?=[ \t]+([a-z][a-z0-9_-]*)(?:[ \t]+([a-z][a-z0-9_-]*))?)")


def doc_files(root: Path = ROOT) -> list[Path]:
    return [root / "README.md", *sorted((root / "docs").glob("*.md"))]


def split_code(text: str) -> tuple[str, list[str]]:
    """The text with code blocks and code spans blanked out, and the code itself (blocks' bodies, then spans)."""
    code = [m.group(2) for m in FENCE.finditer(text)]
    prose = FENCE.sub("", text)
    code += [" ".join(m.group(1).split()) for m in INLINE.finditer(prose)]
    return INLINE.sub("", prose), code


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped (markup included), spaces to hyphens."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link's text only
    return re.sub(r"[^\w\- ]", "", text.strip().lower()).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    prose = FENCE.sub("", path.read_text(encoding="utf-8"))
    seen: dict[str, int] = {}
    found = set()
    for m in HEADING.finditer(prose):
        base = slug(m.group(1))
        n = seen.get(base, 0)
        seen[base] = n + 1
        found.add(base if n == 0 else f"{base}-{n}")
    return found


def broken_links(path: Path, root: Path = ROOT) -> list[str]:
    """One line per relative link of `path` (a Markdown file) that leads nowhere."""
    prose, _ = split_code(path.read_text(encoding="utf-8"))
    problems = []
    for m in LINK.finditer(prose):
        target = m.group(1)
        if SCHEME.match(target):
            continue  # https:, mailto: ... are not checked here (no network)
        file_part, _, anchor = target.partition("#")
        where = f"{path.relative_to(root)}: link {target!r}"
        dest = (path.parent / file_part).resolve() if file_part else path.resolve()
        if not dest.is_relative_to(root.resolve()):
            problems.append(f"{where} leaves the repository")
        elif not dest.exists():
            problems.append(f"{where}: no such file {dest.relative_to(root.resolve())}")
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            problems.append(f"{where}: {dest.name} has no heading with anchor #{anchor}")
    return problems


def named_commands(path: Path) -> set[tuple[str, ...]]:
    """The `repro VERB [WORD]` word pairs in the code spans and blocks of `path`."""
    _, code = split_code(path.read_text(encoding="utf-8"))
    found = set()
    for chunk in code:
        for m in COMMAND.finditer(chunk):
            if m.group(1) != "repro":  # the container image's name, followed by the command itself
                found.add(tuple(w for w in m.groups() if w))
    return found


def unknown_commands(commands: dict[tuple[str, ...], str]) -> list[str]:
    """One line per named command whose `--help` does not exit 0. A second word counts only after a verb group
    (`repro data fetch`); after a plain verb it is an argument (`repro profile` is a group, `repro check` is not)."""
    from repro.cli import app

    root = typer.main.get_command(app)
    runner = CliRunner()
    problems = []
    for words, where in sorted(commands.items()):
        verb = root.commands.get(words[0])  # type: ignore[attr-defined]
        args = list(words[:1])
        if verb is not None and len(words) > 1 and hasattr(verb, "commands"):
            args.append(words[1])
        result = runner.invoke(app, [*args, "--help"])
        if result.exit_code != 0:
            said = [line.strip("│╭╮╰╯─ ") for line in result.output.splitlines()]  # Rich's error box, unboxed
            problems.append(f"{where}: `repro {' '.join(args)} --help` exited {result.exit_code}: "
                            f"{([line for line in said if line] or [''])[-1][:160]}")
    return problems


def test_every_relative_link_resolves():
    problems = [line for path in doc_files() for line in broken_links(path)]
    assert not problems, "\n".join(problems)


def test_every_repro_command_named_in_the_docs_exists():
    commands: dict[tuple[str, ...], str] = {}
    for path in doc_files():
        for words in named_commands(path):
            commands.setdefault(words, str(path.relative_to(ROOT)))
    assert len(commands) >= 15, sorted(commands)  # the collection itself works: the docs name 19 today
    problems = unknown_commands(commands)
    assert not problems, "\n".join(problems)


def test_the_checks_catch_a_broken_link_anchor_and_command(tmp_path):
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs/page.md").write_text("# A page\n\n## Second part (`--x`)\n\ntext\n")
    (tmp_path / "README.md").write_text(
        "# Title\n\n[ok](docs/page.md) [ok anchor](docs/page.md#second-part---x) [self](#title)\n"
        "[gone](docs/missing.md) [bad anchor](docs/page.md#nowhere) [out](../elsewhere.md)\n"
        "[web](https://example.org/x) `[not a link](docs/nope.md)`\n\n"
        "```sh\nrepro data fetch all\nrepro nosuchverb --flag\n```\n"
        "`repro models nosuch` `repro check now` `src/repro/x.py` `repro.cli` `podman run repro repro profile use`\n"
        "a span that wraps: `repro\nmodels verify`, and one past a blank line is none: `repro\n\ndata prepare`\n")
    problems = broken_links(tmp_path / "README.md", tmp_path)
    assert len(problems) == 3, problems
    assert any("docs/missing.md" in p for p in problems)
    assert any("#nowhere" in p for p in problems)
    assert any("leaves the repository" in p for p in problems)
    found = named_commands(tmp_path / "README.md")
    assert found == {("data", "fetch"), ("nosuchverb",), ("models", "nosuch"), ("check", "now"),
                     ("profile", "use"), ("models", "verify")}, found
    problems = unknown_commands({words: "README.md" for words in found})
    assert sorted(p.split("`")[1] for p in problems) == ["repro models nosuch --help", "repro nosuchverb --help"]


def test_slug_follows_githubs_rule():
    assert slug("One run across processes (`--ddp N`)") == "one-run-across-processes---ddp-n"
    assert slug("The CLI's start-up time") == "the-clis-start-up-time"
    assert slug("The pipeline: every output and its command") == "the-pipeline-every-output-and-its-command"
