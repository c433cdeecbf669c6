"""An httpx transport that connects to a vetted host's checked address only (see
utils/ssrf.vet), for the provider SDKs, which bring their own httpx clients: the URL keeps
its host name for the Host header and TLS (server name and certificate check), the socket
goes to the pinned address, and any other host is refused.

It reads at most MAX_RESPONSE_BYTES of an answer, as the engine's own client does, and asks for
it uncompressed: a compressed answer is passed on undecoded (unreadable, so refused), never
expanded past the cap.

`http` is httpx or an API-compatible fork of it: httpx2, which the clients for Anthropic, Google
and Mistral are (Groq's SDK still uses httpx)."""

from __future__ import annotations

import functools
from types import ModuleType
from typing import Any

import httpx

from utils.ssrf import Pin
from utils.transport import MAX_RESPONSE_BYTES


class AnswerTooLarge(Exception):
    """Marks the error a pinned transport raises for an answer past MAX_RESPONSE_BYTES (it is
    also the client library's DecodingError, which its callers know)."""


def pinned_transport(pin: Pin | None, http: ModuleType = httpx) -> Any:
    """`pin` None: the URL's own host, which needs none (a literal address, or private networks
    allowed), its answers capped all the same."""
    return _transport_class(http)(pin, http)


@functools.cache
def _transport_class(http: ModuleType) -> type:
    class PinnedTransport(http.AsyncBaseTransport):  # type: ignore[name-defined]
        def __init__(self, pin: Pin | None, http: ModuleType) -> None:
            self._pin = pin
            self._http = http
            self._inner = http.AsyncHTTPTransport(trust_env=False)

        async def handle_async_request(self, request: Any) -> Any:
            if (pin := self._pin) is not None:
                # The host as sent (an international name in its xn-- form, as checked):
                # `url.host` decodes that form, and raises for one it cannot decode.
                host = request.url.raw_host.decode("ascii").lower()
                if host != pin.host.lower():
                    raise self._http.ConnectError(f"{host} is not the host that was checked")
                request.url = request.url.copy_with(host=pin.address)
                request.extensions = {**request.extensions, "sni_hostname": pin.host}
            request.headers["accept-encoding"] = "identity"
            response = await self._inner.handle_async_request(request)
            headers = [(k, v) for k, v in response.headers.raw if k.lower() != b"content-encoding"]
            return self._http.Response(
                status_code=response.status_code,
                headers=headers,
                stream=CappedStream(response.stream),
                extensions=response.extensions,
                request=request,
            )

        async def aclose(self) -> None:
            await self._inner.aclose()

    class TooLarge(http.DecodingError, AnswerTooLarge):  # type: ignore[name-defined]
        pass

    class CappedStream(http.AsyncByteStream):  # type: ignore[name-defined]
        def __init__(self, inner: Any) -> None:
            self._inner = inner

        async def __aiter__(self) -> Any:
            size = 0
            async for chunk in self._inner:
                size += len(chunk)
                if size > MAX_RESPONSE_BYTES:
                    raise TooLarge(f"the answer is larger than {MAX_RESPONSE_BYTES} bytes")
                yield chunk

        async def aclose(self) -> None:
            await self._inner.aclose()

    return PinnedTransport
