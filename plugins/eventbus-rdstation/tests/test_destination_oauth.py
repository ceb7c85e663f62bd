"""OAuth2 sends: tokens refreshed once, rotations kept in the state, shared by processes, failures alerting."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from datetime import timedelta

import pytest
from conftest import NOW, SALE, MemoryState, Rig
from eventbus_rdstation.oauth import STATE_KEY, Credentials
from structlog.testing import capture_logs

from eventbus.plugin import Outcome

TOKEN = "/auth/token"
EVENTS = "/platform/events"


async def test_the_first_send_refreshes_then_sends_with_the_bearer_token(rig: Rig) -> None:
    result = await rig.deliver(rig.oauth_options())

    assert result.outcome is Outcome.SUCCESS
    assert rig.paths() == [TOKEN, EVENTS]
    grant, send = rig.double.requests
    assert grant.json == {"client_id": "rd-client", "client_secret": "rd-secret", "refresh_token": "rd-refresh-0"}
    assert send.headers["Authorization"] == "Bearer rd-access-1"
    assert send.json == {
        "event_type": "SALE",
        "event_family": "CDP",
        "payload": {"email": "lead@example.com", "value": 199.9, "funnel_name": "default"},
    }
    stored = rig.stored()
    assert stored["access_token"] == "rd-access-1"
    assert stored["refresh_token"] == "rd-refresh-1"  # rotated by RD, kept
    assert stored["expires_at"] == (NOW + timedelta(days=1)).isoformat()
    assert stored["refresh_at"] == (NOW + timedelta(days=1, minutes=-5)).isoformat()


async def test_the_stored_token_is_reused_by_this_and_another_process(rig: Rig) -> None:
    options = rig.oauth_options()
    await rig.deliver(options)
    await rig.deliver(options)
    restarted = rig.new_process()  # a new destination instance, the same subscription state
    result = await rig.deliver(options, plugins=restarted)

    assert result.outcome is Outcome.SUCCESS
    assert rig.paths() == [TOKEN, EVENTS, EVENTS, EVENTS]


async def test_an_expired_token_is_refreshed_once_and_the_send_retried(rig: Rig) -> None:
    options = rig.oauth_options()
    await rig.deliver(options)
    rig.double.expire_access_tokens()
    result = await rig.deliver(options)

    assert result.outcome is Outcome.SUCCESS
    assert rig.paths() == [TOKEN, EVENTS, EVENTS, TOKEN, EVENTS]
    assert rig.double.requests[2].headers["Authorization"] == "Bearer rd-access-1"
    assert rig.double.requests[3].json["refresh_token"] == "rd-refresh-1"  # type: ignore[index]
    assert rig.double.requests[4].headers["Authorization"] == "Bearer rd-access-2"
    stored = rig.stored()
    assert (stored["access_token"], stored["refresh_token"]) == ("rd-access-2", "rd-refresh-2")
    assert rig.double.refresh_tokens == {"rd-refresh-2"}


async def test_a_token_past_its_refresh_time_is_refreshed_before_sending(rig: Rig) -> None:
    options = rig.oauth_options()
    await rig.deliver(options)
    result = await rig.deliver(options, now=NOW + timedelta(hours=23, minutes=56))

    assert result.outcome is Outcome.SUCCESS
    assert rig.paths() == [TOKEN, EVENTS, TOKEN, EVENTS]


async def test_concurrent_deliveries_refresh_once(rig: Rig) -> None:
    options = rig.oauth_options()
    results = await asyncio.gather(*(rig.deliver(options) for _ in range(4)))
    assert all(result.outcome is Outcome.SUCCESS for result in results)
    assert rig.double.counts[TOKEN] == 1

    rig.double.expire_access_tokens()  # all four get a 401 with the same token: still one refresh
    results = await asyncio.gather(*(rig.deliver(options) for _ in range(4)))
    assert all(result.outcome is Outcome.SUCCESS for result in results)
    assert rig.double.counts[TOKEN] == 2
    assert rig.double.counts[EVENTS] == 4 + 4 + 4


async def test_a_refused_refresh_token_alerts(rig: Rig) -> None:
    rig.double.refresh_tokens = {"something-else"}
    result = await rig.deliver(rig.oauth_options())

    assert (result.outcome, result.error_class, result.alert, result.status_code) == (Outcome.RETRY, "auth", True, 401)
    assert result.reason is not None
    assert "INVALID_REFRESH_TOKEN" in result.reason and "authorize the app again" in result.reason
    assert "rd-refresh-0" not in result.reason and "rd-secret" not in result.reason
    assert rig.paths() == [TOKEN]
    assert STATE_KEY not in rig.tokens.values


async def test_a_refresh_refused_because_another_process_rotated_uses_its_tokens(rig: Rig) -> None:
    options = rig.oauth_options()
    await rig.deliver(options)
    rig.double.expire_access_tokens()

    def another_process_refreshes_first(grant: dict[str, object]) -> None:
        # The other process wins the race: RD rotates the token ours is about to use, and the other stores its answer.
        if rig.double.on_token_request is None:
            return
        rig.double.on_token_request = None
        answer = rig.double.issue_tokens(str(grant["refresh_token"]))
        stored = rig.stored()
        stored.update(access_token=answer["access_token"], refresh_token=answer["refresh_token"])
        rig.tokens.values[STATE_KEY] = json.dumps(stored)

    rig.double.on_token_request = another_process_refreshes_first
    result = await rig.deliver(options)

    assert result.outcome is Outcome.SUCCESS
    assert rig.paths() == [TOKEN, EVENTS, EVENTS, TOKEN, EVENTS]
    assert rig.double.requests[-1].headers["Authorization"] == "Bearer rd-access-2"


async def test_a_stale_stored_refresh_token_is_retried_from_the_state_written_meanwhile(rig: Rig) -> None:
    # The other process stored a newer refresh token but no usable access token: one more exchange with it.
    options = rig.oauth_options()
    await rig.deliver(options)
    rig.double.expire_access_tokens()

    def rotate_elsewhere(grant: dict[str, object]) -> None:
        if rig.double.on_token_request is None:
            return
        rig.double.on_token_request = None
        answer = rig.double.issue_tokens(str(grant["refresh_token"]))
        stored = rig.stored()
        stored.update(refresh_token=answer["refresh_token"])
        rig.tokens.values[STATE_KEY] = json.dumps(stored)

    rig.double.on_token_request = rotate_elsewhere
    result = await rig.deliver(options)

    assert result.outcome is Outcome.SUCCESS
    assert [r.json["refresh_token"] for r in rig.double.requests if r.path == TOKEN] == [  # type: ignore[index]
        "rd-refresh-0",
        "rd-refresh-1",
        "rd-refresh-2",
    ]


async def test_a_401_after_a_refresh_alerts_without_another_refresh(rig: Rig) -> None:
    options = rig.oauth_options()
    await rig.deliver(options)
    rig.double.fail_next(
        401, {"errors": [{"error_type": "UNAUTHORIZED", "error_message": "Invalid token."}]}, times=2, path=EVENTS
    )
    result = await rig.deliver(options)

    assert (result.outcome, result.error_class, result.alert, result.status_code) == (Outcome.RETRY, "auth", True, 401)
    assert result.reason is not None and "freshly refreshed access token" in result.reason
    assert rig.paths() == [TOKEN, EVENTS, EVENTS, TOKEN, EVENTS]


async def test_a_new_refresh_token_in_the_options_wins_over_the_stored_chain(rig: Rig) -> None:
    options = rig.oauth_options()
    await rig.deliver(options)
    # The operator authorized the app again and updated the subscription with the new refresh token.
    rig.double.refresh_tokens.add("rd-refresh-new")
    result = await rig.deliver(rig.oauth_options(refresh_token="rd-refresh-new"))

    assert result.outcome is Outcome.SUCCESS
    assert rig.double.requests[2].json["refresh_token"] == "rd-refresh-new"  # type: ignore[index]
    # A new authorization starts a new chain (a new scope); the old one is left as it was.
    chains = {json.loads(state.values[STATE_KEY])["refresh_token"] for state in rig.shared.values()}
    assert chains == {"rd-refresh-1", "rd-refresh-2"}


async def test_token_endpoint_failures_retry_without_alert(rig: Rig) -> None:
    options = rig.oauth_options()
    rig.double.fail_next(503, "<html>busy</html>", path=TOKEN)
    unavailable = await rig.deliver(options)
    rig.double.fail_next(429, {"error": "Too Many Requests", "remaining_time_ms": 1500}, path=TOKEN)
    limited = await rig.deliver(options)
    rig.double.fail_next(200, {"token_type": "bearer"}, path=TOKEN)
    odd = await rig.deliver(options)

    assert (unavailable.outcome, unavailable.error_class, unavailable.alert) == (Outcome.RETRY, "server", False)
    assert unavailable.reason is not None and "HTTP 503 with an unreadable body" in unavailable.reason
    assert (limited.error_class, limited.retry_after) == ("rate_limited", timedelta(seconds=2))
    assert (odd.error_class, odd.reason) == (
        "server",
        "RD Station's token endpoint answered HTTP 200 without an access_token",
    )
    assert odd.response is None
    assert rig.double.counts[EVENTS] == 0


async def test_the_token_answer_is_never_kept_as_the_response(rig: Rig) -> None:
    # A success keeps RD's answer to the event; the token endpoint's answer (which holds the tokens) is never handed on.
    result = await rig.deliver(rig.oauth_options())
    assert result.response is not None
    assert b"rd-access" not in result.response.body and b"rd-refresh" not in result.response.body


async def test_subscriptions_of_one_authorization_share_one_token_chain(rig: Rig) -> None:
    # RD may retire a refresh token on use: two subscriptions made from one authorization must not refresh it
    # each for itself, or the second would be refused. They share the chain (one scope), and refresh once.
    options = rig.oauth_options(SALE)
    first = await rig.deliver(options)
    second = await rig.deliver(options, state=MemoryState())  # another subscription, its own state

    assert (first.outcome, second.outcome) == (Outcome.SUCCESS, Outcome.SUCCESS)
    assert rig.double.counts[TOKEN] == 1
    assert [r.headers["Authorization"] for r in rig.double.requests if r.path == EVENTS] == ["Bearer rd-access-1"] * 2
    assert rig.state.values == {}  # nothing in the subscription's own state


async def test_two_authorizations_keep_their_own_chains(rig: Rig) -> None:
    rig.double.refresh_tokens.add("rd-refresh-other")
    await rig.deliver(rig.oauth_options(SALE))
    await rig.deliver(rig.oauth_options(SALE, refresh_token="rd-refresh-other"), state=MemoryState())

    assert rig.double.counts[TOKEN] == 2
    chains = sorted(json.loads(state.values[STATE_KEY])["access_token"] for state in rig.shared.values())
    assert chains == ["rd-access-1", "rd-access-2"]


def slow_token_endpoint(rig: Rig) -> tuple[asyncio.Event, asyncio.Event]:
    """The double's token endpoint holds each grant until `release` is set; `entered` says one arrived."""
    entered, release = asyncio.Event(), asyncio.Event()

    async def hold(grant: dict[str, object]) -> None:
        entered.set()
        await release.wait()

    hook: Callable[[dict[str, object]], Awaitable[None]] = hold
    rig.double.on_token_request = hook
    return entered, release


async def cancelled_mid_exchange(rig: Rig, options: dict[str, object], entered: asyncio.Event) -> None:
    """A delivery whose attempt is cancelled (its deadline) while RD is answering its refresh."""
    attempt = asyncio.create_task(rig.deliver(options))
    await entered.wait()
    attempt.cancel()
    with pytest.raises(asyncio.CancelledError):
        await attempt


async def settle(condition: Callable[[], bool], *, tries: int = 200) -> None:
    for _ in range(tries):
        if condition():
            return
        await asyncio.sleep(0.01)


def grants(rig: Rig) -> list[object]:
    return [r.json["refresh_token"] for r in rig.double.requests if r.path == TOKEN]  # type: ignore[index]


async def test_a_refresh_cancelled_mid_exchange_is_taken_over_not_sent_again(rig: Rig) -> None:
    # RD retires a refresh token on use: a second exchange of rd-refresh-0 while the first is still on its way
    # would be refused (or, the other way round, strand the chain). The next delivery waits for the first.
    entered, release = slow_token_endpoint(rig)
    options = rig.oauth_options()
    with capture_logs() as logs:
        await cancelled_mid_exchange(rig, options, entered)
        second = asyncio.create_task(rig.deliver(options))
        await settle(lambda: len(grants(rig)) > 1, tries=20)  # time for a grant of its own, were it to send one
        release.set()
        result = await second

    assert result.outcome is Outcome.SUCCESS
    assert grants(rig) == ["rd-refresh-0"]
    assert [r.headers["Authorization"] for r in rig.double.requests if r.path == EVENTS] == ["Bearer rd-access-1"]
    stored = rig.stored()
    assert (stored["access_token"], stored["refresh_token"]) == ("rd-access-1", "rd-refresh-1")
    assert logs == []  # the exchange succeeded: nothing to say


async def test_a_cancelled_refresh_still_stores_the_rotated_token_for_the_next_delivery(rig: Rig) -> None:
    entered, release = slow_token_endpoint(rig)
    options = rig.oauth_options()
    await cancelled_mid_exchange(rig, options, entered)
    release.set()
    await settle(lambda: STATE_KEY in rig.tokens.values)
    result = await rig.deliver(options)

    assert result.outcome is Outcome.SUCCESS
    assert grants(rig) == ["rd-refresh-0"]
    assert rig.stored()["refresh_token"] == "rd-refresh-1"


class BrokenState(MemoryState):
    """A shared state whose writes fail, with an error quoting what was written (the tokens)."""

    async def set(self, key: str, value: str, *, ttl: timedelta | None = None) -> None:
        raise RuntimeError(f"the store is down; could not write {value}")


async def test_an_exchange_failing_after_its_caller_was_cancelled_is_logged_without_tokens(rig: Rig) -> None:
    credentials = Credentials(rig.base_url, "rd-client", "rd-secret", "rd-refresh-0")
    rig.shared[f"oauth-{credentials.fingerprint}"] = BrokenState()
    entered, release = slow_token_endpoint(rig)
    with capture_logs() as logs:
        await cancelled_mid_exchange(rig, rig.oauth_options(), entered)
        release.set()
        await settle(lambda: bool(logs))

    [entry] = logs
    assert (entry["event"], entry["log_level"]) == ("rdstation_token_exchange_failed", "warning")
    assert entry["error"].startswith("RuntimeError: the store is down; could not write")
    for secret in ("rd-access-1", "rd-refresh-1", "rd-refresh-0", "rd-secret"):
        assert secret not in json.dumps(entry)


async def test_a_refused_exchange_whose_caller_was_cancelled_is_logged(rig: Rig) -> None:
    rig.double.refresh_tokens = {"something-else"}
    entered, release = slow_token_endpoint(rig)
    with capture_logs() as logs:
        await cancelled_mid_exchange(rig, rig.oauth_options(), entered)
        release.set()
        await settle(lambda: bool(logs))

    [entry] = logs
    assert entry["event"] == "rdstation_token_exchange_failed"
    assert "refused: HTTP 401: INVALID_REFRESH_TOKEN" in entry["error"]


async def test_tokens_rd_echoes_never_reach_a_reason(rig: Rig) -> None:
    options = rig.oauth_options()
    await rig.deliver(options)  # the chain now holds rd-access-1 and rd-refresh-1
    message = 'header "Bearer rd-access-1" rejected; refresh rd-refresh-1; client rd-secret'
    rig.double.fail_next(400, {"errors": [{"error_type": "BAD_REQUEST", "error_message": message}]}, path=EVENTS)
    result = await rig.deliver(options)

    assert (result.outcome, result.status_code) == (Outcome.REJECT, 400)
    assert result.reason is not None
    assert 'header "Bearer ***" rejected; refresh ***; client ***' in result.reason
    for secret in ("rd-access-1", "rd-refresh-1", "rd-secret"):
        assert secret not in result.reason


async def test_a_token_refused_by_the_events_endpoint_is_not_shown_either(rig: Rig) -> None:
    options = rig.oauth_options()
    await rig.deliver(options)
    rig.double.fail_next(401, {"error_message": "token rd-access-1 is unknown"}, times=2, path=EVENTS)
    result = await rig.deliver(options)

    assert (result.outcome, result.error_class) == (Outcome.RETRY, "auth")
    assert result.reason is not None and "rd-access-1" not in result.reason and "rd-access-2" not in result.reason
