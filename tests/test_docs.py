"""The README and the pages in docs/ stay true to the repository: their links lead somewhere, the
commands they show use settings gpt.py has, and the README's reading guide follows gpt.py."""

import dataclasses
import re
from pathlib import Path

from conftest import REPO

PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
FENCE = re.compile(r"^(```|~~~).*?^\1[ \t]*$", re.DOTALL | re.MULTILINE)  # a fenced code block
INLINE_CODE = re.compile(r"(`+)(?!`).*?(?<!`)\1(?!`)", re.DOTALL)
LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")  # [text](target "title")


def prose(page: Path) -> str:
    """The page without its code, where a [text](target) is an example rather than a link."""
    return INLINE_CODE.sub("", FENCE.sub("", page.read_text(encoding="utf-8")))


def relative_links(page: Path) -> list[str]:
    return [t for t in LINK.findall(prose(page)) if not re.match(r"(https?|mailto):", t, re.IGNORECASE)]


def slug(heading: str) -> str:
    """The anchor GitHub gives a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link in a heading keeps its text
    return re.sub(r"[^\w\- ]", "", text.strip().lower()).replace(" ", "-")


def anchors(page: Path) -> set[str]:
    seen: dict[str, int] = {}
    found = set()
    for heading in re.findall(r"^#{1,6}[ \t]+(.+?)[ \t#]*$", FENCE.sub("", page.read_text(encoding="utf-8")), re.M):
        base = slug(heading)
        found.add(base if base not in seen else f"{base}-{seen[base]}")  # GitHub numbers repeats
        seen[base] = seen.get(base, 0) + 1
    return found


def test_every_relative_link_in_the_readme_and_docs_points_to_a_file_that_exists():
    broken = [
        f"{page.relative_to(REPO)}: {target}"
        for page in PAGES
        for target in relative_links(page)
        if not (page.parent / target.split("#")[0]).exists()
    ]
    assert not broken, "links to nothing:\n" + "\n".join(broken)


def test_every_link_to_a_heading_names_a_heading_of_that_page():
    broken = []
    for page in PAGES:
        for target in relative_links(page):
            path, _, anchor = target.partition("#")
            linked = (page.parent / path).resolve() if path else page
            if anchor and linked.suffix == ".md" and linked.exists() and anchor not in anchors(linked):
                broken.append(f"{page.relative_to(REPO)}: {target}")
    assert not broken, "anchors that name no heading:\n" + "\n".join(broken)


def test_the_readme_is_at_most_200_lines():
    lines = (REPO / "README.md").read_text(encoding="utf-8").splitlines()
    assert len(lines) <= 200, f"README.md has {len(lines)} lines; move the detail to a page in docs/"


def test_every_page_in_docs_is_linked_from_the_readme_or_another_page():
    linked = {
        (page.parent / target.split("#")[0]).resolve() for page in PAGES for target in relative_links(page) if target
    }
    orphans = [page.name for page in PAGES[1:] if page.resolve() not in linked]
    assert not orphans, f"pages no link leads to: {orphans}"


def gpt_py_flags(page: Path) -> list[str]:
    """The --names given to gpt.py in the page's code blocks (shell comments left out)."""
    flags = []
    for block in FENCE.finditer(page.read_text(encoding="utf-8")):
        for line in block.group(0).splitlines():
            command = line.split("#")[0]  # a comment may name a flag in passing
            if "gpt.py" in command:
                flags += re.findall(r"--(\w+)", command.split("gpt.py", 1)[1])
    return flags


def test_every_gpt_py_setting_in_a_documented_command_is_one_gpt_py_has():
    import gpt

    settings = {field.name for field in dataclasses.fields(gpt.Settings)} | {"help"}
    unknown = [f"{page.name}: --{flag}" for page in PAGES for flag in gpt_py_flags(page) if flag not in settings]
    assert not unknown, "flags gpt.py would refuse:\n" + "\n".join(unknown)


def test_the_readmes_reading_guide_follows_part_1_of_gpt_py_in_order():
    # the numbered list under "## Read it" names Part 1's classes and functions in the order gpt.py defines them
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    guide = readme.split("## Read it", 1)[1].split("\n## ", 1)[0]
    steps = "\n".join(line for line in guide.splitlines() if re.match(r"\d+\. ", line) or line.startswith("   "))
    names = re.findall(r"`([A-Za-z_][\w.]*)`", steps)  # GPT.generate: a method, named with its class
    source = (REPO / "gpt.py").read_text(encoding="utf-8")
    assert "\n# Part 2" in source, "gpt.py has no '# Part 2' line for the README to point at"
    part_1 = source.split("\n# Part 2", 1)[0]
    where = {}
    for name in names:
        found = re.search(rf"^\s*(def|class) {name.split('.')[-1]}\b", part_1, re.M)
        assert found, f"the README's reading guide names {name!r}, which Part 1 of gpt.py does not define"
        if "." not in name:  # methods sit inside their class; the order is the top-level names'
            where[name] = found.start()
    assert where, "the README's reading guide lists no names from gpt.py"
    assert list(where.values()) == sorted(where.values()), f"the reading guide's order differs from gpt.py's: {names}"
