"""How the dashboard is opened in a headless browser (its browser test and the screenshot script share this)."""

from __future__ import annotations

CHROMIUM = "/usr/bin/chromium"  # Debian's package; `.ci/run` installs it
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--headless",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
