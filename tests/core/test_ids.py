"""Row ids: version-4 UUIDs from the kernel's CSPRNG, unique across threads and forks."""

from __future__ import annotations

import os
import threading
import uuid

from novaza_gateway.core.ids import new_id


def test_ids_are_version_4_uuids_in_hex() -> None:
    for _ in range(1000):  # several draws of the pool
        value = new_id()
        parsed = uuid.UUID(hex=value)
        assert parsed.hex == value and len(value) == 32
        assert parsed.version == 4 and parsed.variant == uuid.RFC_4122


def test_ids_are_unique_across_threads() -> None:
    seen: list[list[str]] = [[] for _ in range(8)]

    def take(mine: list[str]) -> None:
        mine.extend(new_id() for _ in range(5000))

    threads = [threading.Thread(target=take, args=(mine,)) for mine in seen]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    every = [value for mine in seen for value in mine]
    assert len(set(every)) == len(every) == 40_000


def test_a_forked_child_never_repeats_its_parents_ids() -> None:
    new_id()  # the parent's pool now holds ids the child must not hand out
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        os.close(read)
        os.write(write, "".join(new_id() for _ in range(200)).encode())
        os._exit(0)
    os.close(write)
    with os.fdopen(read, "rb") as pipe:
        data = pipe.read().decode()
    os.waitpid(pid, 0)
    child = {data[i : i + 32] for i in range(0, len(data), 32)}
    parent = {new_id() for _ in range(200)}
    assert len(child) == 200 and not child & parent
