"""The documentation agrees with itself where it gives the same command."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RECOMMENDED = {"backup", "iso", "vztmpl", "snippets"}


def pvesm_contents(path: Path) -> list[set[str]]:
    """The --content of every `pvesm add dir` command in a file (continuation lines joined)."""
    text = re.sub(r"\\\n\s*(#\s*)?", " ", path.read_text())
    return [set(match.split(",")) for match in
            re.findall(r"pvesm add dir \S+ [^\n]*?--content ([\w,]+)", text)]


def test_every_pvesm_line_recommends_the_same_content():
    """README, docs/proxmox-setup.md, docs/multi-node.md and examples/storage.cfg recommend the
    same content; images and rootdir are left out (slow on one node, unsafe when shared), as
    the docs warn."""
    found = {name: pvesm_contents(REPO / name)
             for name in ("README.md", "docs/proxmox-setup.md", "docs/multi-node.md",
                          "examples/storage.cfg")}
    assert all(found.values()), found
    for name, contents in found.items():
        assert contents == [RECOMMENDED] * len(contents), name
    for name in ("docs/proxmox-setup.md", "examples/storage.cfg"):
        stanza = re.findall(r"^\tcontent (\S+)$", (REPO / name).read_text(), re.MULTILINE)
        assert [set(content.split(",")) for content in stanza] == [RECOMMENDED], name
    warning = (REPO / "docs" / "proxmox-setup.md").read_text()
    assert "Content `images` and `rootdir` work on a single node but are slow" in warning
