"""README.md's performance table is the one ``benchmarks/readme_table.py`` generates from
the newest committed ``benchmarks/results/<date>.json`` (never typed by hand)."""

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _generator():
    spec = importlib.util.spec_from_file_location("readme_table", ROOT / "benchmarks" / "readme_table.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_readme_table_is_generated_from_the_committed_result(capsys):
    generator = _generator()
    result = generator.newest_result()
    assert result.parent == ROOT / "benchmarks" / "results"
    assert generator.main(["--check"]) == 0, capsys.readouterr().err
    readme = (ROOT / "README.md").read_text()
    block = readme[readme.index(generator.START):readme.index(generator.END)]
    assert f"from benchmarks/results/{result.name}" in block
    assert "untraced, other core kept busy" in block  # the control row stays
