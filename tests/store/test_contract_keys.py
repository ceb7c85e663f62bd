"""Store contract, API keys: records round-trip with only the digest, listing, revocation, coarse usage stamps.

Every test speaks the `KeyStore` Protocol only: any backend runs this file through the `store` fixture.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from eventbus.ids import new_id
from eventbus.store.base import Store
from eventbus.store.keys import KeyRecord, key_store_of

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def record(scopes: tuple[str, ...] = ("publish",), name: str = "") -> KeyRecord:
    key_id = new_id("key")
    return KeyRecord(key_id=key_id, name=name, digest=f"sha256:{key_id}", scopes=scopes, created_at=NOW)


async def test_a_key_round_trips(store: Store) -> None:
    keys = key_store_of(store)
    made = record(("publish", "admin"), name="ops")
    await keys.create_key(made)
    assert await keys.get_key(made.key_id) == made
    assert await keys.get_key("key_missing") is None
    assert await keys.active_keys() == [made]


async def test_listing_pages_in_creation_order_and_hides_revoked(store: Store) -> None:
    keys = key_store_of(store)
    made = [record() for _ in range(3)]
    for item in made:
        await keys.create_key(item)
    await keys.revoke_key(made[1].key_id, now=NOW)
    active = await keys.list_keys(include_revoked=False, after_id="", limit=10)
    assert [k.key_id for k in active] == [made[0].key_id, made[2].key_id]
    every = await keys.list_keys(include_revoked=True, after_id=made[0].key_id, limit=1)
    assert [k.key_id for k in every] == [made[1].key_id]
    assert [k.key_id for k in await keys.active_keys()] == [made[0].key_id, made[2].key_id]


async def test_revoking_keeps_the_first_time(store: Store) -> None:
    keys = key_store_of(store)
    made = record()
    await keys.create_key(made)
    first = await keys.revoke_key(made.key_id, now=NOW)
    assert first is not None and first.revoked_at == NOW and not first.active
    again = await keys.revoke_key(made.key_id, now=NOW + timedelta(hours=1))
    assert again is not None and again.revoked_at == NOW
    assert await keys.revoke_key("key_missing", now=NOW) is None


async def test_usage_stamps_never_move_back(store: Store) -> None:
    keys = key_store_of(store)
    made = record()
    await keys.create_key(made)
    await keys.touch_keys([made.key_id, "key_missing"], now=NOW + timedelta(minutes=2))
    await keys.touch_keys([made.key_id], now=NOW + timedelta(minutes=1))
    await keys.touch_keys([], now=NOW)
    stored = await keys.get_key(made.key_id)
    assert stored is not None and stored.last_used_at == NOW + timedelta(minutes=2)
