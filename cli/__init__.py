"""The `rr` command."""
