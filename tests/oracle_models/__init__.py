"""Test-only model classes, registered in the server through SGLANG_EXTERNAL_MODEL_PACKAGE."""
