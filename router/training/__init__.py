"""Training lives apart from serving: data, the InfoNCE loss and the loop that writes an expert directory."""
