"""The shared outbound transport keeps nothing from one exchange for the next."""

from __future__ import annotations

from tests.fakes.http_app import FakeHttpApp, Fault
from utils import transport


async def test_a_cookie_set_by_one_answer_is_never_sent_again() -> None:
    """One HTTP client serves every organization's calls: an endpoint's Set-Cookie must
    not ride along with the next request to that host (another tenant's, perhaps)."""
    with FakeHttpApp() as app:
        app.enqueue(
            Fault.http(200, {"data": {"answer": "hi"}}, headers={"set-cookie": "sid=tenant-a"})
        )
        # A host name, not an address: cookie jars ignore cookies from bare IP addresses.
        url = f"{app.url}/chat".replace("127.0.0.1", "localhost")
        headers = {"Content-Type": "application/json"}
        first = await transport.send("POST", url, body="{}", headers=headers, seconds=10)
        second = await transport.send("POST", url, body="{}", headers=headers, seconds=10)
        assert first[1].get("set-cookie") == "sid=tenant-a"
        assert second[0] == 200
        assert len(app.requests) == 2
        assert "cookie" not in app.requests[1].headers
