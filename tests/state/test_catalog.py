"""The catalog of runtime rules, integrations and settings, on a real SQLite file."""

from __future__ import annotations

import pytest

from tests.state.test_alerts import T0
from tocsin.errors import ConflictError
from tocsin.state.catalog import Catalog, CatalogEntry
from tocsin.state.db import Database

RULE = {"name": "drift", "metric": "model.drift", "threshold": 0.2}
WEBHOOK = {"type": "webhook", "name": "oncall", "url": "https://hooks.example/x"}


@pytest.fixture
def catalog(db, clock) -> Catalog:
    return Catalog(db, clock)


async def test_a_rule_is_stored_with_who_added_it_and_when(catalog, clock):
    clock.advance(5)

    added = await catalog.add_rule("drift", RULE, "api:alice")

    expected = CatalogEntry(
        name="drift", body=RULE, created_at=T0 + 5, created_by="api:alice"
    )
    assert added == expected
    assert await catalog.rules() == [expected]
    assert await catalog.rule("drift") == expected
    assert await catalog.rule("other") is None


async def test_rules_are_listed_by_name(catalog):
    for name in ("b", "c", "a"):
        await catalog.add_rule(name, {**RULE, "name": name}, "api:alice")

    assert [entry.name for entry in await catalog.rules()] == ["a", "b", "c"]


@pytest.mark.parametrize("kind", ["rule", "integration"])
async def test_a_name_taken_is_refused_and_the_first_entry_kept(catalog, kind):
    if kind == "rule":
        await catalog.add_rule("drift", RULE, "api:alice")
        with pytest.raises(ConflictError, match="a rule named 'drift' already"):
            await catalog.add_rule("drift", {**RULE, "threshold": 9}, "api:bob")
        [kept] = await catalog.rules()
    else:
        await catalog.add_integration("oncall", "webhook", WEBHOOK, "api:alice")
        with pytest.raises(ConflictError, match="an integration named 'oncall'"):
            await catalog.add_integration("oncall", "log", {}, "api:bob")
        [kept] = await catalog.integrations()

    assert kept.created_by == "api:alice"


async def test_deleting_answers_whether_there_was_an_entry(catalog):
    await catalog.add_rule("drift", RULE, "api:alice")
    await catalog.add_integration("oncall", "webhook", WEBHOOK, "api:alice")

    assert await catalog.delete_rule("drift") is True
    assert await catalog.delete_rule("drift") is False
    assert await catalog.delete_integration("oncall") is True
    assert await catalog.delete_integration("oncall") is False
    assert await catalog.rules() == []
    assert await catalog.integrations() == []


async def test_a_setting_is_replaced_by_the_next_put(catalog):
    assert await catalog.setting("grouping") is None

    await catalog.put_setting("grouping", {"group_by": ["model"]})
    await catalog.put_setting("grouping", {"group_wait": "30s"})
    await catalog.put_setting("dedup", {"keys": ["model"]})

    assert await catalog.setting("grouping") == {"group_wait": "30s"}
    assert await catalog.settings() == {
        "dedup": {"keys": ["model"]},
        "grouping": {"group_wait": "30s"},
    }


async def test_everything_survives_reopening_the_database(tmp_path, clock):
    path = tmp_path / "state" / "tocsin.db"
    db = await Database.open(path, clock=clock)
    catalog = Catalog(db, clock)
    await catalog.add_rule("drift", RULE, "api:alice")
    await catalog.add_integration("oncall", "webhook", WEBHOOK, "api:token")
    await catalog.put_setting("digest", {"interval": "1h"})
    before = (await catalog.rules(), await catalog.integrations())
    await db.close()

    reopened = await Database.open(path, clock=clock)
    try:
        again = Catalog(reopened, clock)
        after = (await again.rules(), await again.integrations())
        assert after == before
        assert after[1][0].type == "webhook"
        assert after[1][0].body["url"] == "https://hooks.example/x"
        assert await again.setting("digest") == {"interval": "1h"}
    finally:
        await reopened.close()
