"""Everything that touches SGLang internals lives in this package (one folder per SGLang version)."""
