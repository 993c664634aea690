"""SGLang plugin entry point (group ``sglang.srt.plugins``), run early in every SGLang process."""

from __future__ import annotations

import logging

logger = logging.getLogger(__name__)


def load() -> None:
    from sglang_dflash.integration import hooks

    hooks.install()
