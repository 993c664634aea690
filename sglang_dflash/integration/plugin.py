"""SGLang plugin entry point (group ``sglang.srt.plugins``), run early in every SGLang process."""

from __future__ import annotations


def load() -> None:
    from sglang_dflash.integration import hooks

    hooks.install()
