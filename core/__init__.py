"""Shared core: the one settings class and the exception hierarchy every layer raises."""
