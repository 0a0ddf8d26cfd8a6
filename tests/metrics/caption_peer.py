"""Helpers shared by the caption-metric tests: the real coco-caption tokenizer (Java) and the refdata path."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

REFDATA = Path(__file__).resolve().parents[2] / ".." / "shared" / "refdata"
FAKECAP = REFDATA / "coco-fakecap"
TRICKY = Path(__file__).resolve().parent / "data" / "ptb_tricky.txt"


def need_java() -> None:
    if shutil.which("java") is None:
        pytest.skip("java is not installed: the reference PTB tokenizer (a jar) cannot run")


def java_ptb_lines(lines: list[str]) -> list[str]:
    """The jar's raw output, one line per input line (one JVM start), exactly as coco-caption calls it."""
    ptb = pytest.importorskip("pycocoevalcap.tokenizer.ptbtokenizer")
    jar = Path(ptb.__file__).parent / ptb.STANFORD_CORENLP_3_4_1_JAR
    with tempfile.NamedTemporaryFile("wb", suffix=".txt", delete=False) as f:
        f.write("\n".join(lines).encode())
    try:
        cmd = [
            "java",
            "-cp",
            str(jar),
            "edu.stanford.nlp.process.PTBTokenizer",
            "-preserveLines",
            "-lowerCase",
        ]
        out = subprocess.run([*cmd, f.name], capture_output=True, check=True, timeout=300)
    finally:
        os.remove(f.name)
    return out.stdout.decode().split("\n")[: len(lines)]


def fakecap() -> tuple[dict, list]:
    if not FAKECAP.is_dir():
        pytest.skip(f"shared reference data absent: {FAKECAP}")
    refs = json.loads((FAKECAP / "captions_val2014_subset.json").read_text())
    res = json.loads((FAKECAP / "captions_val2014_fakecap_results.json").read_text())
    return refs, res


def fakecap_dicts() -> tuple[dict, dict]:
    """({image_id: [captions]} in the order of the annotation file's images, {image_id: caption})."""
    refs, res = fakecap()
    references: dict = {img["id"]: [] for img in refs["images"]}
    for ann in refs["annotations"]:
        references[ann["image_id"]].append(ann["caption"])
    return references, {r["image_id"]: r["caption"] for r in res}
