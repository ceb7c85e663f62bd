"""Two processes refreshing one OAuth chain at once, through the real store-backed shared state: the one whose
refresh RD refuses (the other's exchange retired the refresh token a moment before) uses the other's tokens once
they are stored, instead of telling the operator to authorize the app again."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from conftest import NOW, Rig, delivery
from eventbus_rdstation.oauth import STATE_KEY, Credentials

from eventbus.bus.destinations import StoredState
from eventbus.clock import ManualClock
from eventbus.plugin import DestinationContext, DestinationResult, KeyValueState, Outcome, Plugins
from eventbus.store.base import Store

TOKEN = "/auth/token"
EVENTS = "/platform/events"


class Watched:
    """A process's view of the store-backed state, with two test hooks at the interface: `before_set` holds each
    write until it is set; `read_after` is set by the first read made once `armed`."""

    def __init__(self, inner: KeyValueState) -> None:
        self.inner = inner
        self.before_set: asyncio.Event | None = None
        self.setting = asyncio.Event()
        self.read_after: asyncio.Event | None = None
        self.armed = False

    async def get(self, key: str) -> str | None:
        value = await self.inner.get(key)
        if self.armed and self.read_after is not None:
            self.read_after.set()
        return value

    async def set(self, key: str, value: str, *, ttl: timedelta | float | None = None) -> None:
        self.setting.set()
        if self.before_set is not None:
            await self.before_set.wait()
        await self.inner.set(key, value, ttl=ttl)

    async def delete(self, key: str) -> None:
        await self.inner.delete(key)


async def deliver(rig: Rig, plugins: Plugins, state: Watched, options: dict[str, object]) -> DestinationResult:
    destination = plugins.destinations().get("rdstation")
    assert destination is not None
    context = DestinationContext(
        client=rig.egress,
        options=options,
        state=rig.state,
        now=NOW,
        subscription_id="sub_test",
        scopes=lambda scope: state,
    )
    result = await plugins.call_destination(destination, delivery(), context)
    assert isinstance(result, DestinationResult), result
    return result


async def test_a_refresh_refused_because_another_process_won_the_race_uses_its_tokens(rig: Rig, store: Store) -> None:
    options = rig.oauth_options()
    scope = f"rdstation/oauth-{Credentials(rig.base_url, 'rd-client', 'rd-secret', 'rd-refresh-0').fingerprint}"
    clock = ManualClock(NOW)
    first = Watched(StoredState(store, scope, clock))  # process A's view of the shared state
    second = Watched(StoredState(store, scope, clock))  # process B's: the same rows in the same store
    process_a, process_b = rig.new_process(), rig.new_process()

    # A's exchange reaches RD first: RD rotates rd-refresh-0 and answers, and A's write of the answer is held
    # until B, refused for the same rd-refresh-0, has looked at the state after its refusal (and found nothing).
    b_looked = asyncio.Event()
    first.before_set = b_looked
    second.read_after = b_looked

    def grant(body: dict[str, object]) -> None:
        if rig.double.counts[TOKEN] == 2:  # B's grant: whatever B reads from now on, it reads after RD's refusal
            second.armed = True

    rig.double.on_token_request = grant
    a = asyncio.create_task(deliver(rig, process_a, first, options))
    await first.setting.wait()  # A has RD's answer and is storing it; RD no longer accepts rd-refresh-0
    b = asyncio.create_task(deliver(rig, process_b, second, options))
    result_b = await b
    result_a = await a

    grants = [r.json for r in rig.double.requests if r.path == TOKEN]
    assert [g["refresh_token"] for g in grants if isinstance(g, dict)] == ["rd-refresh-0", "rd-refresh-0"]
    assert rig.double.statuses[401] == 1  # B's refresh was refused
    assert result_a.outcome is Outcome.SUCCESS
    assert (result_b.outcome, result_b.alert, result_b.reason) == (Outcome.SUCCESS, False, None)
    # B sent with the token A stored, and started no exchange of its own.
    sends = [r.headers["Authorization"] for r in rig.double.requests if r.path == EVENTS]
    assert sends == ["Bearer rd-access-1", "Bearer rd-access-1"]
    assert rig.double.counts[TOKEN] == 2
    stored = await StoredState(store, scope, clock).get(STATE_KEY)
    assert stored is not None and '"refresh_token": "rd-refresh-1"' in stored


async def test_a_refresh_refused_with_nobody_storing_newer_tokens_still_alerts(rig: Rig, store: Store) -> None:
    options = rig.oauth_options()
    scope = f"rdstation/oauth-{Credentials(rig.base_url, 'rd-client', 'rd-secret', 'rd-refresh-0').fingerprint}"
    state = Watched(StoredState(store, scope, ManualClock(NOW)))
    rig.double.refresh_tokens = {"revoked-meanwhile"}
    result = await deliver(rig, rig.new_process(), state, options)

    assert (result.outcome, result.error_class, result.alert) == (Outcome.RETRY, "auth", True)
    assert result.reason is not None and "authorize the app again" in result.reason
    assert rig.double.counts[TOKEN] == 1
