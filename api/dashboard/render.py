"""The dashboard's HTML: one page rendered on the server from ``data.dashboard_data``, refreshed by the browser.

Every value shown carries a ``data-*`` attribute naming what it is, so tests (and scrapers) read the page as a person
sees it without depending on the layout.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from html import escape
from typing import Any

from api.dashboard import svg

STYLE = """
*{box-sizing:border-box}
body{margin:0;font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:#1f2937;background:#f3f4f6}
header{display:flex;align-items:center;justify-content:space-between;padding:14px 24px;background:#111827;color:#f9fafb}
header h1{font-size:18px;margin:0;font-weight:600}
header .who{font-size:13px;color:#d1d5db;display:flex;gap:12px;align-items:center}
header button{background:#374151;color:#f9fafb;border:0;border-radius:6px;padding:5px 10px;cursor:pointer}
main{display:grid;grid-template-columns:repeat(2,minmax(0,1fr));gap:16px;padding:16px 24px;max-width:1440px;
 margin:0 auto}
section{background:#fff;border-radius:10px;padding:14px 18px;box-shadow:0 1px 2px rgba(0,0,0,.06);overflow-x:auto}
section.wide{grid-column:1/-1}
h2{font-size:15px;margin:0 0 10px;font-weight:600}
h3{font-size:12px;margin:14px 0 6px;color:#6b7280;text-transform:uppercase;letter-spacing:.04em;font-weight:600}
table{border-collapse:collapse;width:100%}
th,td{text-align:left;padding:5px 8px;border-bottom:1px solid #f1f5f9;vertical-align:middle;white-space:nowrap}
th{font-size:12px;color:#6b7280;font-weight:600}
td.n,th.n{text-align:right;font-variant-numeric:tabular-nums}
.stats{display:flex;gap:28px;margin-bottom:6px}
.stat b{display:block;font-size:24px;font-weight:600}
.stat span{font-size:12px;color:#6b7280}
.chip{display:inline-block;padding:1px 7px;margin:1px 2px;border-radius:10px;background:#eef2ff;color:#3730a3;
 font-size:12px}
.state-done{background:#dcfce7;color:#166534}.state-running,.state-pending,.state-queued,.state-retrying{background:#fef9c3;color:#854d0e}
.state-failed,.state-dropping{background:#fee2e2;color:#991b1b}
.muted{color:#6b7280}.bad{color:#dc2626}
.legend{font-size:12px;color:#6b7280}.legend i{display:inline-block;width:10px;height:3px;margin:0 4px 3px 10px}
svg text{font:11px system-ui,sans-serif}svg text.axis{fill:#6b7280;font-size:10px}
svg text.num{font-variant-numeric:tabular-nums}
.charts{display:flex;flex-wrap:wrap;gap:18px 36px;align-items:flex-start}.charts>div{min-width:0}
form.signin{max-width:420px;margin:12vh auto;background:#fff;padding:28px;border-radius:12px;
 box-shadow:0 1px 3px rgba(0,0,0,.1)}
form.signin input{width:100%;padding:8px 10px;margin:8px 0 14px;border:1px solid #d1d5db;border-radius:6px;font:inherit}
form.signin button{padding:8px 16px;border:0;border-radius:6px;background:#2563eb;color:#fff;font:inherit;
 cursor:pointer}
@media (max-width:900px){main{grid-template-columns:1fr}}
"""


def _page(title: str, body: str, refresh: int = 0) -> str:
    meta = f'<meta http-equiv="refresh" content="{refresh}">' if refresh > 0 else ""
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width,initial-scale=1">'
        f"{meta}<title>{escape(title)}</title><style>{STYLE}</style></head><body>{body}</body></html>"
    )


def sign_in(error: str | None = None) -> str:
    """The form that turns an API key into the dashboard's HttpOnly cookie."""
    err = f'<p class="bad" data-field="error">{escape(error)}</p>' if error else ""
    body = (
        '<form class="signin" method="post" action="/dashboard/login">'
        "<h2>RouterRetriever operations</h2>"
        '<p class="muted">Sign in with an API key: the admin key shows the whole platform, a tenant\'s key only '
        "that tenant.</p>"
        f'{err}<label for="key">API key</label>'
        '<input id="key" name="key" type="password" autocomplete="current-password" required autofocus>'
        '<button type="submit">Sign in</button></form>'
    )
    return _page("Sign in · RouterRetriever", body)


def _num(x: float | None, fmt: str = "{:.1f}", none: str = "–") -> str:
    return none if x is None else fmt.format(x)


def _chips(items: Iterable[str], cls: str = "") -> str:
    return "".join(f'<span class="chip {cls}">{escape(i)}</span>' for i in items)


def _state(expert: str, state: str) -> str:
    e, s = escape(expert), escape(state)
    return f'<span class="chip state-{s}" data-expert="{e}">{e}: {s}</span>'


def _ago(t: float, now: float) -> str:
    s = max(0, int(now - t))
    return f"{s} s ago" if s < 90 else f"{s // 60} min ago" if s < 5400 else time.strftime("%H:%M", time.localtime(t))


def _queue(d: dict[str, Any], now: float) -> str:
    q = d["queue"]
    stats = (
        '<div class="stats">'
        f'<div class="stat"><b data-field="depth">{_num(q["depth"], "{:d}")}</b><span>waiting in the queue</span></div>'
        f'<div class="stat"><b data-field="held">{_num(q["held"], "{:d}")}</b><span>held by workers</span></div>'
        f'<div class="stat"><b data-field="workers">{_num(q["workers"], "{:d}")}</b>'
        f"<span>workers online ({escape(q['kind'])})</span></div>"
        f'<div class="stat"><b data-field="in_flight">{len(q["in_flight"])}</b><span>jobs in flight</span></div></div>'
    )
    if q["in_flight"]:
        rows = "".join(
            f'<tr data-job="{escape(j["job_id"])}"><td>{escape(j["label"])}</td><td>{escape(j["status"])}</td>'
            f"<td>{svg.progress_bar(j['done'] / j['total'] if j['total'] else 0.0)}</td>"
            f'<td class="n">{j["done"]} / {j["total"]}</td><td class="muted">{_ago(j["created_at"], now)}</td></tr>'
            for j in q["in_flight"]
        )
        jobs = (
            f"<h3>Jobs in flight</h3><table><tr><th>collection</th><th>status</th><th>progress</th>"
            f'<th class="n">documents</th><th>queued</th></tr>{rows}</table>'
        )
    else:
        jobs = '<h3>Jobs in flight</h3><p class="muted">None: every job is done.</p>'
    if q["failures"]:
        rows = "".join(
            f'<tr data-job="{escape(j["job_id"])}"><td>{escape(j["label"])}</td>'
            f'<td class="n">{j["failed_documents"]}</td>'
            f'<td class="bad" style="white-space:normal">{escape("; ".join(j["reasons"]))}</td>'
            f'<td class="muted">{_ago(j["created_at"], now)}</td></tr>'
            for j in q["failures"]
        )
        fails = (
            f'<h3>Recent failures</h3><table><tr><th>collection</th><th class="n">documents</th>'
            f"<th>reason</th><th>queued</th></tr>{rows}</table>"
        )
    else:
        fails = '<h3>Recent failures</h3><p class="muted">None among the recent jobs.</p>'
    return f'<section id="queue"><h2>Queue</h2>{stats}{jobs}{fails}</section>'


def _collections(d: dict[str, Any]) -> str:
    if not d["collections"]:
        return '<section id="collections"><h2>Collections</h2><p class="muted">No collections yet.</p></section>'
    rows = []
    for c in d["collections"]:
        backfill = "".join(_state(e, s) for e, s in sorted(c["backfill"].items())) or '<span class="muted">–</span>'
        pinned = f' <span class="chip">pinned: {escape(c["expert"])}</span>' if c.get("expert") else ""
        rows.append(
            f'<tr data-collection="{escape(c["label"])}"><td>{escape(c["label"])}{pinned}</td>'
            f'<td class="n" data-field="documents">{c["documents"]}</td>'
            f'<td data-field="vectors">{_chips(c["vectors"])}</td><td data-field="backfill">{backfill}</td></tr>'
        )
    return (
        '<section id="collections"><h2>Collections</h2><table><tr><th>collection</th>'
        '<th class="n">documents</th><th>named vectors (one per encoder)</th><th>expert backfill</th></tr>'
        f"{''.join(rows)}</table></section>"
    )


def _scoring(scoring: dict[str, Any] | None) -> str:
    """The queue's Algorithm-1 run for a registered expert; a failure's reason in the chip's title."""
    if scoring is None:
        return ""
    s, why = escape(scoring["status"]), escape(scoring.get("reason") or "")
    return f'<span class="chip state-{s}" title="{why}">{s}</span>'


def _experts(d: dict[str, Any]) -> str:
    experts = d["experts"]
    if not experts:
        return '<section id="experts"><h2>Experts</h2><p class="muted">No experts registered.</p></section>'
    total = sum(e["searches"] for e in experts)
    rows = "".join(
        f'<tr data-expert="{escape(e["name"])}"><td><b>{escape(e["name"])}</b></td><td>{escape(e["domain"])}</td>'
        f'<td>{escape(e["sides"])}</td><td class="n" data-field="pilots">{e["pilots"]}</td>'
        f'<td data-field="scoring">{_scoring(e["scoring"])}</td>'
        f'<td class="n" data-field="searches">{e["searches"]}</td>'
        f'<td class="n" data-field="share">{e["share"] * 100:.1f}%</td></tr>'
        for e in experts
    )
    bars = svg.hbars([(e["name"], e["share"], f"{e['share'] * 100:.1f}%") for e in experts])
    return (
        f'<section id="experts"><h2>Experts</h2><table><tr><th>expert</th><th>domain</th><th>sides</th>'
        f'<th class="n">pilots</th><th>scoring</th><th class="n">searches</th><th class="n">share</th></tr>'
        f"{rows}</table>"
        f"<h3>Share of the last 60 minutes' {total} answered searches</h3>{bars}</section>"
    )


def _routing(d: dict[str, Any]) -> str:
    r = d["routing"]
    if not r["rows"] or not r["experts"]:
        body = '<p class="muted">No collections or no experts yet.</p>'
    else:
        counts = [[row["counts"][e] for e in r["experts"]] for row in r["rows"]]
        body = svg.heatmap([row["collection"] for row in r["rows"]], r["experts"], counts)
    return (
        '<section id="routing" class="wide"><h2>Routing: which expert answers each collection\'s searches</h2>'
        '<p class="muted">Share of each collection\'s answered searches in the last 60 minutes, by expert (rows sum '
        "to 100%; hover a cell for the counts). A collection of one domain should light up one column.</p>"
        f"{body}</section>"
    )


def _search(d: dict[str, Any]) -> str:
    s = d["search"]
    rows = "".join(
        f'<tr data-window="{k}"><td>last {k[:-1]} min</td><td class="n" data-field="searches">{w["searches"]}</td>'
        f'<td class="n" data-field="qps">{_num(w["qps"], "{:.3f}")}</td>'
        f'<td class="n" data-field="p50">{_num(w["p50_ms"])}</td><td class="n" data-field="p95">'
        f'{_num(w["p95_ms"])}</td><td class="n" data-field="p99">{_num(w["p99_ms"])}</td>'
        f'<td class="n" data-field="error_rate">{_num(w["error_rate"], "{:.1%}")}</td></tr>'
        for k, w in s["windows"].items()
    )
    per = s["per_minute"]
    qpm = svg.columns([m["searches"] for m in per], unit="/min")
    lat = svg.lines(
        [("p50", [m["p50_ms"] for m in per], svg.ACCENT), ("p95", [m["p95_ms"] for m in per], svg.ACCENT_2)],
        unit=" ms",
    )
    return (
        '<section id="search"><h2>Search</h2><table><tr><th>window</th><th class="n">searches</th>'
        '<th class="n">per second</th><th class="n">p50 ms</th><th class="n">p95 ms</th><th class="n">p99 ms</th>'
        f'<th class="n">errors</th></tr>{rows}</table>'
        '<p class="muted">Latency of answered searches inside the API (routing, expert pass, vector search); errors '
        "count every refused or failed search.</p>"
        f'<div class="charts"><div><h3>Searches per minute</h3>{qpm}</div><div><h3>Latency per minute '
        f'<span class="legend"><i style="background:{svg.ACCENT}"></i>p50<i style="background:{svg.ACCENT_2}">'
        f"</i>p95</span></h3>{lat}</div></div></section>"
    )


def _ingestion(d: dict[str, Any]) -> str:
    g = d["ingestion"]
    rows = "".join(
        f'<tr data-window="{k}"><td>last {k[:-1]} min</td><td class="n" data-field="documents">{w["documents"]}</td>'
        f'<td class="n" data-field="batches">{w["batches"]}</td>'
        f'<td class="n" data-field="docs_per_s">{_num(w["docs_per_s"], "{:.3f}")}</td></tr>'
        for k, w in g["windows"].items()
    )
    enc_rows = "".join(
        f'<tr data-encoder="{escape(e["encoder"])}"><td>{escape(e["encoder"])}</td><td class="n">{e["batches"]}</td>'
        f'<td class="n" data-field="mean_batch_s">{_num(e["mean_batch_s"], "{:.3f}")}</td>'
        f'<td class="n" data-field="ms_per_doc">{_num(e["ms_per_doc"], "{:.2f}")}</td></tr>'
        for e in g["encoders"]
    )
    encoders = (
        '<table><tr><th>encoder</th><th class="n">batches</th>'
        f'<th class="n">s per batch</th><th class="n">ms per document</th></tr>{enc_rows}</table>'
        + svg.hbars(
            [
                (e["encoder"], e["ms_per_doc"] or 0.0, f"{_num(e['ms_per_doc'], '{:.2f}')} ms/doc")
                for e in g["encoders"]
            ],
            color=svg.ACCENT_2,
        )
        if g["encoders"]
        else '<p class="muted">No batches in the last 60 minutes.</p>'
    )
    dpm = svg.columns([m["documents"] for m in g["per_minute"]], unit="/min")
    return (
        '<section id="ingestion" class="wide"><h2>Ingestion</h2><div class="charts">'
        '<div><table><tr><th>window</th><th class="n">documents</th><th class="n">batches</th>'
        f'<th class="n">documents per second</th></tr>{rows}</table></div>'
        f"<div><h3>Documents per minute</h3>{dpm}</div>"
        f"<div><h3>Encode time per encoder (last 60 min)</h3>{encoders}</div></div></section>"
    )


def dashboard(d: dict[str, Any], refresh: int) -> str:
    """The six areas: queue, collections, experts, routing, search, ingestion."""
    now = d["generated_at"]
    who = "admin: every tenant" if d["admin"] else f"tenant {d['viewer']}"
    every = f" · refreshes every {refresh} s" if refresh > 0 else ""
    header = (
        "<header><h1>RouterRetriever operations</h1>"
        f'<div class="who"><span data-field="viewer">{escape(who)}</span>'
        f"<span>updated {time.strftime('%H:%M:%S', time.localtime(now))}{every}</span>"
        '<a href="/dashboard/data" style="color:#93c5fd">JSON</a>'
        '<form method="post" action="/dashboard/logout" style="margin:0"><button>Sign out</button></form>'
        "</div></header>"
    )
    main = "".join([_queue(d, now), _collections(d), _experts(d), _search(d), _routing(d), _ingestion(d)])
    return _page("RouterRetriever operations", f"{header}<main>{main}</main>", refresh)
