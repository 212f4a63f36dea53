"""GET /api/instances: pages by a cursor, newest first, through the indexes, with the work of
one page bounded however many instances are stored."""

from __future__ import annotations

from typing import Any

import redis

from orchestrator.core.instance import Instance
from orchestrator.store.instances import CHUNK, PAGE_BUDGET, Store
from orchestrator.store.keys import Keys
from tests.entry.api_support import Api, api

__all__ = ["api"]  # the fixture, used by name


def every_page(api: Api, query: str, limit: int) -> tuple[list[str], int]:
    """The ids of every page of a listing, in order, and how many pages it took."""
    ids: list[str] = []
    cursor, pages = "", 0
    while True:
        answer = api.get(f"/api/instances?limit={limit}{query}{cursor}")
        assert answer.status_code == 200, answer.text
        page = answer.json()
        ids += [row["id"] for row in page["instances"]]
        pages += 1
        if page["next"] is None:
            return ids, pages
        cursor = f"&cursor={page['next']}"


def test_pages_hold_every_instance_once_newest_first_under_each_filter(api: Api) -> None:
    # Given instances of two workflows in several states and statuses
    client = api.app.client
    for number in range(12):
        client.start("counter")
        client.start("approval", {"request_id": f"R{number}"})
    api.drain()
    everything = client.list(limit=100)
    for instance in everything[::3]:
        client.cancel(instance.id)
    api.drain()
    stored = sorted(
        (client.status(i.id) for i in everything), key=lambda i: i.created_at, reverse=True
    )

    def expected(**where: Any) -> list[str]:
        return [
            i.id for i in stored if all(getattr(i, name) == value for name, value in where.items())
        ]

    cases: list[tuple[str, list[str]]] = [
        ("", expected()),
        ("&workflow=counter", expected(workflow="counter")),
        ("&status=cancelled", expected(status="cancelled")),
        ("&status=running&workflow=approval", expected(status="running", workflow="approval")),
        ("&state=waiting", expected(state="waiting")),
        ("&state=counting&workflow=counter", expected(state="counting", workflow="counter")),
        ("&state=nowhere", []),
    ]
    for query, ids in cases:
        # When the listing is read page after page
        for limit in (1, 5, 50):
            found, pages = every_page(api, query, limit)
            # Then it holds every match once, newest first
            assert found == ids, (query, limit)
            assert pages <= len(ids) // limit + 2
    # a business key: the live instance answering to it
    keyed = api.get("/api/instances?key=request_id%3DR3").json()
    assert [row["workflow"] for row in keyed["instances"]] == ["approval"]
    assert keyed["next"] is None
    assert api.get("/api/instances?key=request_id%3Dnone").json()["instances"] == []


def test_the_cli_list_reads_the_same_pages(api: Api) -> None:
    client = api.app.client
    made = [client.start("counter") for _ in range(7)]
    assert [i.id for i in client.list(limit=5)] == made[::-1][:5]
    assert [i.id for i in client.list(limit=100)] == made[::-1]


def index(client: redis.Redis, keys: Keys, count: int, failed: set[int]) -> list[str]:
    """`count` instances in the indexes (score: their number), `failed` ones stored too."""
    ids = [f"i{number:06d}" for number in range(count)]
    pipe = client.pipeline(transaction=False)
    for start in range(0, count, 5000):
        chunk = {ids[n]: float(n) for n in range(start, min(start + 5000, count))}
        pipe.zadd(keys.all_instances, chunk)
        pipe.zadd(keys.by_workflow("counter"), chunk)
        done = [i for n, i in enumerate(ids) if start <= n < start + 5000 and n not in failed]
        pipe.sadd(keys.by_status("completed"), *done)
    for number in failed:
        pipe.sadd(keys.by_status("failed"), ids[number])
        shown = Instance(
            id=ids[number], workflow="counter", version=1, created_at=float(number), status="failed"
        )
        pipe.hset(keys.instance(ids[number]), mapping=shown.to_fields())
    pipe.execute()
    return ids


def calls(client: redis.Redis) -> dict[str, int]:
    stats: dict[str, Any] = client.info("commandstats")
    return {name.removeprefix("cmdstat_"): int(value["calls"]) for name, value in stats.items()}


def test_a_page_examines_a_bounded_number_of_ids_however_many_are_stored(api: Api) -> None:
    # Given 20,000 instances in the indexes, two of them failed, far from the newest
    client, keys = api.app.redis, api.app.keys
    ids = index(client, keys, 20_000, failed={10, 5_000})
    client.config_resetstat()
    # When failed instances are listed, a page at a time
    found, pages = every_page(api, "&status=failed", 50)
    # Then both are found, newest first, over pages that each examined at most PAGE_BUDGET ids
    assert found == [ids[5_000], ids[10]]
    assert pages <= 20_000 // PAGE_BUDGET + 1  # the last may find the end and nothing more
    used = calls(client)
    per_page = -(-PAGE_BUDGET // CHUNK)
    assert used["zrevrangebyscore"] <= pages * per_page
    assert used["smismember"] <= pages * per_page
    assert used.get("hgetall", 0) == 2  # only the instances shown are read
    for whole_set in ("smembers", "sinter", "scan", "sscan", "zrange", "keys", "zrevrange"):
        assert whole_set not in used, whole_set


def test_an_unfiltered_page_reads_only_what_it_shows(api: Api) -> None:
    client, keys = api.app.redis, api.app.keys
    ids = index(client, keys, 20_000, failed=set(range(19_990, 20_000)))
    client.config_resetstat()
    page = api.get("/api/instances?limit=10").json()
    assert [row["id"] for row in page["instances"]] == ids[::-1][:10]
    assert page["next"] is not None
    used = calls(client)
    assert used["zrevrangebyscore"] == 1 and used["hgetall"] == 10
    assert "smismember" not in used


def test_equal_creation_times_are_neither_lost_nor_repeated(api: Api) -> None:
    # Given 30 instances indexed with only three distinct scores
    client, keys = api.app.redis, api.app.keys
    store = Store(client, keys)
    ids = [f"t{n:02d}" for n in range(30)]
    for number, instance_id in enumerate(ids):
        shown = Instance(id=instance_id, workflow="counter", version=1, created_at=number // 10)
        client.hset(keys.instance(instance_id), mapping=shown.to_fields())
        client.zadd(keys.all_instances, {instance_id: float(number // 10)})
    # When they are paged through, a few at a time
    for limit in (1, 4, 7):
        seen: list[str] = []
        cursor = None
        while True:
            page = store.page(limit=limit, cursor=cursor)
            seen += [i.id for i in page.instances]
            cursor = page.next
            if cursor is None:
                break
        # Then each is seen once, newest score first, then by id descending as Redis orders
        assert seen == sorted(ids, key=lambda i: (int(i[1:]) // 10, i), reverse=True)


def test_a_page_with_few_matches_stops_at_its_budget_and_says_where_to_go_on(api: Api) -> None:
    client, keys = api.app.redis, api.app.keys
    ids = index(client, keys, 1_000, failed={3})
    store = Store(client, keys)
    first = store.page(status="failed", budget=100)
    assert first.instances == [] and first.examined == 100 and first.next is not None
    rest = store.page(status="failed", cursor=first.next)
    assert [i.id for i in rest.instances] == [ids[3]] and rest.next is None
