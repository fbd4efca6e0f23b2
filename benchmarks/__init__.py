"""Benchmark scripts (plain programs; a package only so tests can import them)."""
