"""docs/generate: generated blocks are found, rewritten from fresh runs, and the docs match the code."""

from __future__ import annotations

import sys
from importlib.machinery import SourceFileLoader
from importlib.util import module_from_spec, spec_from_loader
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def load_generate():
    loader = SourceFileLoader("docs_generate", str(ROOT / "docs" / "generate"))
    module = module_from_spec(spec_from_loader("docs_generate", loader))
    sys.modules["docs_generate"] = module  # dataclasses look their module up there
    loader.exec_module(module)
    return module


gen = load_generate()

DOC = """# title

text before
<!-- generated -->
```
$ echo one
stale output
$ make thing > file.json
```
<!-- end generated -->
between
<!-- generated: slow -->
```text
$ long run
old
```
<!-- end generated -->
after
"""


def fake_run(command: str) -> str:
    return "" if ">" in command else f"fresh output of {command}\n"


def test_blocks_are_found_with_their_commands():
    blocks = gen.find_blocks(DOC)
    assert [b.commands for b in blocks] == [("echo one", "make thing > file.json"), ("long run",)]
    assert [b.slow for b in blocks] == [False, True]


def test_rewriting_replaces_outputs_only_inside_selected_blocks():
    new, changed = gen.regenerate(DOC, fake_run)
    assert len(changed) == 1  # the slow block is skipped by default
    assert "$ echo one\nfresh output of echo one\n$ make thing > file.json\n```" in new
    assert "stale output" not in new and "$ long run\nold\n" in new
    assert new.replace("fresh output of echo one\n", "stale output\n") == DOC  # nothing else moved
    slow, changed = gen.regenerate(DOC, fake_run, slow=True)
    assert len(changed) == 2 and "fresh output of long run" in slow
    # a second pass changes nothing (fixed point), and --match selects blocks by their commands
    assert gen.regenerate(new, fake_run)[1] == []
    only, changed = gen.regenerate(DOC, fake_run, slow=True, match="long")
    assert len(changed) == 1 and "stale output" in only


def test_a_stale_block_is_reported_by_check(tmp_path, monkeypatch):
    doc = tmp_path / "x.md"
    doc.write_text("<!-- generated -->\n```\n$ echo hi\nwrong\n```\n<!-- end generated -->\n")
    assert gen.main(["--check", str(doc)]) == 1
    assert "wrong" in doc.read_text()  # --check writes nothing
    assert gen.main([str(doc)]) == 0
    assert doc.read_text() == "<!-- generated -->\n```\n$ echo hi\nhi\n```\n<!-- end generated -->\n"
    assert gen.main(["--check", str(doc)]) == 0


def test_workdir_keeps_what_earlier_runs_left(tmp_path):
    """--workdir DIR: blocks run in DIR, so a file an earlier run left there (e.g. a filled store) is seen;
    a DIR holding a real docs/ folder is refused (it would be shadowed by the link)."""
    doc, work = tmp_path / "x.md", tmp_path / "work"
    doc.write_text("<!-- generated -->\n```\n$ cat left.txt\nold\n```\n<!-- end generated -->\n")
    work.mkdir()
    (work / "left.txt").write_text("from the timed run\n")
    assert gen.main(["--workdir", str(work), str(doc)]) == 0
    assert "$ cat left.txt\nfrom the timed run\n" in doc.read_text()
    assert gen.main(["--workdir", str(work), "--check", str(doc)]) == 0  # again: the old link is replaced
    assert gen.main(["--workdir", str(work), str(doc)]) == 0  # after a check's copy, too
    (tmp_path / "repo" / "docs").mkdir(parents=True)
    with pytest.raises(SystemExit, match="real directory"):
        gen.main(["--workdir", str(tmp_path / "repo"), str(doc)])


def test_commands_run_this_checkouts_cli_and_see_docs():
    work = gen.make_workdir()
    where = gen.run_command(f"{sys.executable} -c 'import batchscale; print(batchscale.__file__)'", work)
    assert where.startswith(str(ROOT / "src"))
    assert (work / "docs" / "generate").exists()
    out = gen.run_command("batchscale predict noise-scale --b-simple 10 --batch-sizes 10 --format csv", work)
    assert out.splitlines()[0].startswith("batch_size,steps_ratio")


def test_every_generated_block_in_the_docs_is_well_formed():
    for path in sorted((ROOT / "docs").glob("*.md")):
        text = path.read_text()
        blocks = gen.find_blocks(text)
        assert text.count("<!-- generated") == len(blocks), path
        assert all(b.commands for b in blocks), path


@pytest.mark.slow
def test_quick_sweep_table_in_the_docs_equals_a_fresh_run():
    """The README's main job (`sweep steps --quick`) as shown in docs/sweep.md is what the code prints."""
    assert "sweep steps --quick" in (ROOT / "README.md").read_text()
    assert gen.main(["--check", "--match", "sweep steps --quick", str(ROOT / "docs" / "sweep.md")]) == 0
