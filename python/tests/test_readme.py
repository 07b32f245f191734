"""The README's quick example runs as written."""

import pathlib
import re


def test_readme_quick_example():
    text = (pathlib.Path(__file__).parent.parent / "README.md").read_text()
    block = re.search(r"```python\n(.*?)```", text, re.S).group(1)
    assert "KvCache" in block  # the quick example, not another block
    exec(compile(block, "README.md", "exec"), {})
