"""The ingestion queue: a Celery app whose tasks are thin wrappers over ingest/ and router/ functions."""
