"""The live page takes any event of its stream for a sign of life: it reopens a stream that has
said nothing for a few heartbeats, and the server sends none while other events flow (a judge
streaming its verdict sends only evaluation.delta)."""

from __future__ import annotations

import re

from app.public import STATIC
from database.results.event_payloads import STREAM_EVENTS


def test_the_page_listens_for_every_event_its_stream_sends() -> None:
    script = (STATIC / "live_run.js").read_text(encoding="utf-8")
    named = set(re.findall(r'"([a-z]+\.[a-z_]+)"', script))
    assert set(STREAM_EVENTS) <= named, sorted(set(STREAM_EVENTS) - named)
