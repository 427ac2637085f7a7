"""The HTTP API (FastAPI): collections, documents, jobs, search, routing, experts, tenants."""
