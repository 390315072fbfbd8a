"""README.md says what the code does: its figures are attributed to their sources and its Python
snippets give the shapes they print (the walk through its example commands is test_readme_walk.py)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from shardfakes import make_fake_shards

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")
BENCHMARKS = (ROOT / "BENCHMARKS.md").read_text(encoding="utf-8")


def _paragraphs(text: str) -> list[str]:
    return [p for p in re.split(r"\n\s*\n", text) if p.strip()]


def _python_block_with(text: str, needle: str) -> str:
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    (block,) = [b for b in blocks if needle in b]
    return block


@pytest.mark.parametrize("doc", ["README.md", "BENCHMARKS.md"])
def test_the_fer2013_reference_figures_name_their_source(doc):
    """65.55% (and 56.31%) are rishabh30/Facial-Expression-Recognition's deep (shallow) CNN; the
    prior-attention project reported FERG-DB only, so no FER2013 figure is ever called its own."""
    text = {"README.md": README, "BENCHMARKS.md": BENCHMARKS}[doc]
    cited = [p for p in _paragraphs(text) if "65.55" in p or "56.31" in p]
    assert cited, f"{doc} no longer cites the reference figure"
    for p in cited:
        flat = " ".join(p.split())
        assert "rishabh30/Facial-Expression-Recognition" in flat, p
        assert not re.search(r"(original|prior-attention)( code)?'?s? 65\.55", flat), p
        assert not re.search(r"original prior-attention code: 65\.55", flat), p


def test_hdf5_snippet_runs_and_prints_the_shapes_it_says(tmp_path, monkeypatch):
    """The shard-format snippet, run as written on a folder cut with the default block sizes."""
    from prepro.blocks import BlockConfig

    block = _python_block_with(README, "h5py.File")
    said = re.search(r"uint8 \((\d+), (\d+), (\d+)\), \((\d+), (\d+), (\d+)\)", block)
    assert said, "the snippet no longer says the shapes of its blocks"
    defaults = BlockConfig()
    make_fake_shards(tmp_path / "out" / "fer2013", eyes_size=defaults.eyes_size, mouth_size=defaults.mouth_size,
                     face_size=defaults.face_size, per_class={"train": 8, "val": 1, "test": 1})
    monkeypatch.chdir(tmp_path)
    scope: dict = {}
    exec(compile(block, "README.md", "exec"), scope)  # noqa: S102 - the project's own documentation
    assert tuple(scope["eyes"].shape) == tuple(map(int, said.group(1, 2, 3)))
    assert tuple(scope["mouth"].shape) == tuple(map(int, said.group(4, 5, 6)))
    assert len(scope["labels"]) == 16 and scope["keep"].dtype == bool


def test_python_section_uses_only_what_faceblocks_exports():
    import faceblocks

    block = _python_block_with(README, "import faceblocks")
    compile(block, "README.md", "exec")
    used = set(re.findall(r"faceblocks\.(\w+)", block + README.split("## Python", 1)[1].split("\n## ", 1)[0]))
    assert used and used <= set(faceblocks.__all__), used - set(faceblocks.__all__)
