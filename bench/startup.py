"""Start-up: from `python -m app serve` (dependencies installed, bytecode compiled, the embedded
PostgreSQL stopped, as after a previous `make run`) to the first `/health` = 200.

Baseline, measured alternately in the same run: the floor of the stack, a bare FastAPI app
with SQLAlchemy over asyncpg whose `/health` runs one query, served by uvicorn the same way
against the same PostgreSQL (already running). The ratio says how much start-up is Assay's own:
its modules, the embedded PostgreSQL's start, the migration check, the worker pool."""

from __future__ import annotations

import compileall
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from bench.harness import StolenTime, free_port
from database import embedded

ROOT = Path(__file__).resolve().parents[1]
SOURCES = ("app", "database", "migrations", "notifications", "providers", "tasks", "utils")
ROUNDS = 5
FLOOR_APP = """
from fastapi import FastAPI
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

engine = create_async_engine({url!r})
app = FastAPI()


@app.get("/health")
async def health() -> dict[str, int]:
    async with engine.connect() as connection:
        return {{"ok": (await connection.execute(text("SELECT 1"))).scalar_one()}}
"""


def _time_to_health(command: list[str], env: dict[str, str], port: int, cwd: Path) -> float:
    started = time.perf_counter()
    process = subprocess.Popen(
        command, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                    return time.perf_counter() - started
            except httpx.HTTPError:
                pass
            if process.poll() is not None:
                raise RuntimeError(f"{command} exited with {process.returncode}")
            time.sleep(0.01)
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(60)


def _assay(data_dir: Path) -> float:
    port = free_port()
    env = {key: value for key, value in os.environ.items() if not key.startswith("ASSAY_")}
    env |= {"ASSAY_DATA_DIR": str(data_dir), "ASSAY_LOG_LEVEL": "WARNING"}
    command = [sys.executable, "-m", "app", "serve", "--port", str(port)]
    return _time_to_health(command, env, port, ROOT)


def _floor(app_dir: Path) -> float:
    port = free_port()
    command = [sys.executable, "-m", "uvicorn", "floor:app", "--port", str(port)]
    command += ["--log-level", "warning"]
    return _time_to_health(command, dict(os.environ), port, app_dir)


def _summary(times: list[float]) -> str:
    return f"{statistics.median(times):.2f} s (range {min(times):.2f}-{max(times):.2f})"


async def run() -> None:
    for source in SOURCES:  # as `make run` does: bytecode once, not at every start
        compileall.compile_dir(ROOT / source, quiet=1)
    work = Path(tempfile.mkdtemp(prefix="assay-bench-startup-"))
    stolen = StolenTime()
    try:
        data_dir = work / "data"
        _assay(data_dir)  # creates the data dir, migrates; not counted
        floor_db = await embedded.start_embedded(work / "floor", cleanup_mode="delete")
        (work / "floor.py").write_text(
            FLOOR_APP.format(url=floor_db.url(embedded.OWNER_ROLE, "postgres"))
        )
        assay, floor = [], []
        with stolen.measure():
            for _ in range(ROUNDS):
                assay.append(_assay(data_dir))
                floor.append(_floor(work))
        await floor_db.release()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print("start-up: `python -m app serve` to the first /health = 200 (median of 5)")
    print(f"  assay (embedded PostgreSQL started)  {_summary(assay)}")
    print(f"  floor (FastAPI + SQLAlchemy, 1 query) {_summary(floor)} (baseline)")
    print(f"  ratio {statistics.median(assay) / statistics.median(floor):.2f}x")
    if stolen.share is not None:
        print(f"  CPU time the hypervisor gave other guests meanwhile: {stolen.share:.0%}")
