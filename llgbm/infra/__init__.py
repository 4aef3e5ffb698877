"""Plumbing every layer shares: one error type, atomic files, provenance, artifact paths."""
