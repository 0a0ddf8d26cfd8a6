"""Task heads on top of pooled or token features."""

from __future__ import annotations

from vlblocks.heads.classification import MLPHead

__all__ = ["MLPHead"]
