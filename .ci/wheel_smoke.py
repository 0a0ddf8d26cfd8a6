"""Smoke test of the installed wheel, run from a folder outside the checkout by .ci/run.

Checks: vlblocks imports from site-packages (not the checkout), `py.typed` ships, the wheel declares exactly the
nine runtime dependencies, importing it loads neither transformers nor timm, and every ```python block of the
README tour runs (blocks marked `# needs the hub` are skipped: they download models).
Usage: python wheel_smoke.py README.md
"""

from __future__ import annotations

import importlib.metadata as md
import re
import sys
from pathlib import Path

RUNTIME = {"torch", "einops", "safetensors", "huggingface_hub", "timm", "transformers", "pillow", "numpy", "tqdm"}


def main() -> int:
    import vlblocks

    where = Path(vlblocks.__file__).resolve()
    assert "site-packages" in where.parts, f"vlblocks imported from {where}, not from the installed wheel"
    assert (where.parent / "py.typed").is_file(), "py.typed missing from the wheel"
    assert "transformers" not in sys.modules and "timm" not in sys.modules, "import vlblocks pulled heavy modules"
    requires = md.requires("vlblocks") or []
    runtime = {re.split(r"[ ;<>=!~\[]", r, maxsplit=1)[0].lower().replace("-", "_") for r in requires if "extra ==" not in r}
    assert runtime == {n.replace("-", "_") for n in RUNTIME}, f"runtime dependencies: {sorted(runtime)}"
    readme = Path(sys.argv[1]).read_text(encoding="utf-8")
    blocks = re.findall(r"```python\n(.*?)```", readme, flags=re.S)
    namespace: dict = {}
    ran = 0
    for block in blocks:
        if "# needs the hub" in block:
            continue
        exec(compile(block, "README.md", "exec"), namespace)  # noqa: S102
        ran += 1
    print(f"wheel smoke: vlblocks {vlblocks.__version__} from {where.parent}; {ran} README blocks ran, "
          f"{len(blocks) - ran} need the hub")
    return 0


if __name__ == "__main__":
    sys.exit(main())
