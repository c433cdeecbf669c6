"""The public app, mounted at /public: what browsers and terminals reach without the admin API.

It is a FastAPI instance of its own (streams need their own middleware), so it installs the
same problem+json handlers: sub-apps do not inherit the parent's.
"""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware

from app.errors import install_error_handlers


def create_public_app() -> FastAPI:
    public = FastAPI(
        title="Assay public streams",
        docs_url=None,
        redoc_url=None,
        openapi_url="/openapi.json",
    )
    # Stream credentials travel in the URL (EventSource cannot set headers), never in cookies.
    public.add_middleware(
        CORSMiddleware, allow_origins=["*"], allow_methods=["GET"], allow_credentials=False
    )
    install_error_handlers(public)
    return public
