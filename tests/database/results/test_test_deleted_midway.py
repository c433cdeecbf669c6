"""A test deleted while a run of it is under way: its results not yet written keep no test, as
those written before the deletion do (SET NULL). Before, their insert failed its foreign key:
the chunk's whole batch, again at every flush, so the chunk was run again, calling the
provider anew for every case, and what the first attempt paid was never counted."""

from __future__ import annotations

import pytest

from app.engine import executor, writer
from tests.database.results.conftest import ChunkContext

pytestmark = pytest.mark.slow


async def test_a_test_deleted_before_its_results_are_written_leaves_them_testless(
    quiet_lab, fake, committed_database, monkeypatch
):
    lab = quiet_lab
    cases = [{"input": f"question {i}"} for i in range(4)]
    created = await lab.post("/tests/bulk", {"project_id": lab.project_id, "tests": cases})
    test_ids = created.json()["ids"]
    body = {"project_id": lab.project_id, "name": "s", "test_ids": test_ids}
    test_set = (await lab.post("/test-sets", body, expect=201)).json()["id"]
    target = await lab.openai_model(fake, input_price_per_mtok=100_000, output_price_per_mtok=0)
    run = await lab.run(test_set, target, metric_ids=[await lab.any_answer()], concurrency=1)
    monkeypatch.setattr(writer, "FLUSH_SECONDS", 60.0)  # one flush, at the chunk's end
    flush = writer.ChunkWriter.flush
    deleted: list[int] = []

    async def deleting_first(self, *, last=False):
        if not deleted and self.rows:
            url = f"/api/v1/tests/{test_ids[0]}"
            deleted.append((await lab.client.delete(url, headers=lab.account.headers)).status_code)
        return await flush(self, last=last)

    monkeypatch.setattr(writer.ChunkWriter, "flush", deleting_first)
    payload = {
        "run_id": run["id"],
        "positions": list(range(4)),
        "repetitions": [0, 1],
    }  # a range: repetition 0
    await executor.run_chunk(ChunkContext(committed_database, lab.account.organization_id, payload))

    assert deleted == [204]
    done = await lab.get(f"/runs/{run['id']}")
    assert done["status"] == "completed" and done["counts"]["done"] == 4, done
    assert len(fake.requests) == 4  # each case called once
    results = await lab.results(run["id"])
    assert sorted((r["test_id"] is None) for r in results) == [False, False, False, True]
    paid = sum(r["cost"] for r in results)
    assert paid > 0 and done["spent"] == pytest.approx(paid)
