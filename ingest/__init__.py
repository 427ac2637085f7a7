"""Reading documents in: BEIR collections from disk (or the official archives), streamed and validated."""
