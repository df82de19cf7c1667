"""Ingestion: validation, tracking plan, dedupe, and the write path into both stores."""
