"""Where the weights help: the regime study's findings, as BENCHMARKS.md records them.

Opens on the README's "Findings" (the plain statement of what the study found), then
shows the sections written by `benchmarks/regimes.py` (the study on the digits, its
cross-architecture table, and the study on a real dataset of unequal classes, ELPV) and by
`benchmarks/converged.py` (the converged protocol) from the repository's BENCHMARKS.md,
with their plots. Nothing is computed here; rerun the scripts to refresh them.
"""

import re
from pathlib import Path

import streamlit as st

ROOT = Path(__file__).resolve().parents[3]  # a checkout (ddoq/ui/app_pages/findings.py)
SECTIONS = ("regimes", "regimes-cross-arch", "converged", "regimes-converged", "elpv")
HEADING_NOTE = re.compile(r"\s*\(regime study, issue \d+\)")
IMAGE = re.compile(r"^!\[(?P<alt>[^\]]*)\]\((?P<path>[^)]+)\)\s*$")

st.title("Where do the weights help?")
st.caption(
    "DDOQ (centroids weighted by their cell masses) against D4M (the same centroids, "
    "uniform weights) across data, label and training regimes on the embedded digits, and "
    "on real solar-cell images of four unequal classes (ELPV), with per-class budgets: the "
    "study `benchmarks/regimes.py` made, as the repository's BENCHMARKS.md records it."
)
readme = ROOT / "README.md"
summary = re.search(r"^## Findings\n(.*?)(?=^## )", readme.read_text() if readme.is_file() else "",
                    re.S | re.M)  # fmt: skip
if summary:
    with st.container(border=True):
        st.markdown("**In short** (the README's findings)")
        st.markdown(
            summary.group(1)
            .replace("[BENCHMARKS.md](BENCHMARKS.md)", "BENCHMARKS.md (below)")
            .strip()
        )
source = ROOT / "BENCHMARKS.md"
text = source.read_text() if source.is_file() else ""
shown = 0
for name in SECTIONS:
    found = re.search(rf"<!-- BEGIN {re.escape(name)} -->\n(.*?)<!-- END {re.escape(name)} -->",
                      text, re.S)  # fmt: skip
    if not found:
        continue
    shown += 1
    block: list[str] = []
    lines = found.group(1).splitlines()
    if shown == 1 and lines and lines[0].startswith("## "):
        lines = lines[1:]  # the study's own heading: this page's title says it
    for line in lines:
        line = HEADING_NOTE.sub("", line) if line.startswith("#") else line
        image = IMAGE.match(line)
        if image is None:
            block.append(line)
            continue
        st.markdown("\n".join(block))
        block = []
        path = ROOT / image["path"]
        if path.is_file():
            st.image(str(path), caption=image["alt"])
        else:
            st.caption(
                f"(plot {image['path']} is missing: run `python benchmarks/regimes.py --report`)"
            )
    st.markdown("\n".join(block))
if not shown:
    st.info(
        "The study's results are not in this copy of ddoq: BENCHMARKS.md, written by "
        "`python benchmarks/regimes.py`, sits at the root of the repository.",
        icon=":material/info:",
    )
