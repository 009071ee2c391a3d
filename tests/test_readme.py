"""The README's Python examples and examples/encode_decode.py run as written."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]


def python_blocks(markdown: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", markdown, flags=re.S)


def test_readme_python_examples_run(tmp_path, monkeypatch):
    blocks = python_blocks((ROOT / "README.md").read_text())
    assert len(blocks) >= 2
    monkeypatch.chdir(tmp_path)
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (300, 400, 3), dtype=np.uint8)).save("photo.jpg")
    namespace: dict = {}
    for block in blocks:
        exec(compile(block, "README.md", "exec"), namespace)  # noqa: S102 - our own README
    assert tuple(namespace["tokens"].shape) == (1, 32, 32)
    assert namespace["restored"].size == (256, 256)
    assert (tmp_path / "my-codec" / "model.safetensors").is_file()


def test_example_writes_a_reconstruction(tmp_path):
    result = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "encode_decode.py"), "--out", str(tmp_path), "--size", "256"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert "PSNR" in result.stdout
    reconstruction = Image.open(tmp_path / "reconstruction.png")
    assert reconstruction.size == (256, 256)
    psnr = float(re.search(r"PSNR ([0-9.]+) dB", result.stdout).group(1))
    # a random codec scores about 10 dB on photos; the shipped one must really reconstruct
    assert "movqgan-tiny-photos" in result.stdout
    assert psnr > 16.0


def test_ci_runs_the_readme_test_commands():
    readme = (ROOT / "README.md").read_text()
    block = re.search(r"Run the tests.*?```bash\n(.*?)```", readme, flags=re.S)
    assert block is not None, "README has no 'Run the tests' bash block"
    commands = [line.strip() for line in block.group(1).splitlines() if line.strip()]
    ci = [line.strip() for line in (ROOT / ".ci" / "run").read_text().splitlines()]
    assert commands and ci[-len(commands):] == commands  # the same commands, in order, at the end of .ci/run


def architecture_modules(markdown: str) -> set[str]:
    """Module paths (relative to ``src/movq``) of the README's package map."""
    section = markdown.split("## Architecture", 1)[1].split("\n## ", 1)[0]
    tree = re.search(r"```\nsrc/movq/\n(.*?)```", section, flags=re.S).group(1)
    paths, folders = set(), []  # folders: (indent, name) of the folders the current line lies in
    for line in tree.splitlines():
        name, indent = line.split()[0], len(line) - len(line.lstrip())
        while folders and folders[-1][0] >= indent:
            folders.pop()
        if name.endswith("/"):
            folders.append((indent, name))
        else:
            paths.add("".join(f for _, f in folders) + name)
    return paths


def test_readme_architecture_map_matches_the_package():
    listed = architecture_modules((ROOT / "README.md").read_text())
    package = ROOT / "src" / "movq"
    modules = {p.relative_to(package).as_posix() for p in package.rglob("*.py")}
    assert listed <= modules, f"the README lists modules that do not exist: {sorted(listed - modules)}"
    unlisted = {m for m in modules - listed if not (m.endswith("/__init__.py"))}
    assert not unlisted, f"modules missing from the README's architecture map: {sorted(unlisted)}"
