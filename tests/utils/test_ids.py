"""Primary keys: version 7 UUIDs (RFC 9562) that sort by creation, equal in every way to the
ones the uuid module makes from the same value, and never shared with a forked child."""

from __future__ import annotations

import itertools
import multiprocessing
import pickle
import time
import uuid

from utils import ids
from utils.ids import new_id


def test_ids_are_version_7_with_the_time_and_strictly_increasing() -> None:
    before = time.time_ns() // 1_000_000
    ids = [new_id() for _ in range(5_000)]
    after = time.time_ns() // 1_000_000

    assert all(i.version == 7 and i.variant == uuid.RFC_4122 for i in ids)
    assert all(a.int < b.int for a, b in itertools.pairwise(ids))
    assert before <= ids[0].int >> 80 and ids[-1].int >> 80 <= after + 1


def test_an_id_is_the_uuid_its_value_makes() -> None:
    made = new_id()
    plain = uuid.UUID(int=made.int)
    assert made == plain and hash(made) == hash(plain) and str(made) == str(plain)
    assert uuid.UUID(str(made)) == made and pickle.loads(pickle.dumps(made)) == made
    assert made.is_safe is plain.is_safe and repr(made) == repr(plain)


def _child_ids(sent: multiprocessing.connection.Connection) -> None:
    sent.send([new_id().int & ((1 << 62) - 1) for _ in range(3)])


def test_a_forked_child_draws_random_bits_of_its_own() -> None:
    while not ids._random_bits:  # the parent holds drawn bits a child would inherit
        new_id()
    fork = multiprocessing.get_context("fork")
    receiving, sending = fork.Pipe(duplex=False)
    child = fork.Process(target=_child_ids, args=(sending,))
    child.start()
    sending.close()
    assert receiving.poll(10), "the child sent no ids"
    theirs = receiving.recv()
    child.join(10)
    assert child.exitcode == 0
    ours = [new_id().int & ((1 << 62) - 1) for _ in range(3)]
    assert set(theirs).isdisjoint(ours)
