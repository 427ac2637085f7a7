"""The operations dashboard: ``data`` gathers what it shows (also served as JSON), ``render`` turns that into one
HTML page whose charts are SVG drawn here on the server (``svg``): no JavaScript, no CDN, nothing to vendor."""
