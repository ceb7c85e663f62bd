"""The dashboard in a real browser (Debian's chromium): sign in with a key, find a failed delivery, resend it and
see it succeed; a hostile payload is shown as text and never runs. The screenshot goes to the test's temp dir, or
to the README's docs/dashboard.png with EVENTBUS_UPDATE_SCREENSHOT=1 (so a test run never changes the tree)."""

from __future__ import annotations

import os
from collections import deque
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING

from eventbus.bus.subscriptions import SubscriptionInput
from eventbus.http.ui import CONTENT_SECURITY_POLICY
from eventbus.model import Event
from eventbus.runtime import EventBusServer
from tests.delivery.helpers import Receiver, Reply, delivery_of, publish, wait_attempts

if TYPE_CHECKING:
    from playwright.async_api import Page

README_SCREENSHOT = Path(__file__).resolve().parents[2] / "docs" / "dashboard.png"
HOSTILE = {
    "order_id": 1042,
    "note": "<script>window.__pwned = 1</script>",
    "gift_message": "<img src=x onerror=window.__pwned=2>",
    "total": {"amount": "59.90", "currency": "EUR"},
}


async def sign_in(page: Page, url: str, key: str) -> None:
    from playwright.async_api import expect

    response = await page.goto(url)
    assert response is not None and response.ok
    assert response.headers["content-security-policy"] == CONTENT_SECURITY_POLICY  # as the browser received it
    await expect(page.locator("#key-form")).to_be_visible()
    await page.fill("#api-key", key)
    await page.click("#key-form button[type=submit]")
    await expect(page.locator("nav")).to_be_visible()


async def test_resend_a_failed_delivery_and_show_a_hostile_payload_as_text(
    server: EventBusServer, admin_key: str, dashboard_url: str, page: Page, tmp_path: Path
) -> None:
    from playwright.async_api import expect

    hook = Receiver()
    hook.replies = deque([Reply(500, body=b'{"error":"database unavailable, try again later"}')])
    hook.default = Reply(200, body=b'{"received":true}')
    await hook.start()
    try:
        # One long retry delay: the failed first attempt stays failed (pending, next attempt in an hour).
        endpoint = await server.services.subscriptions.create(
            SubscriptionInput(patterns=["order.*"], options={"url": hook.url}, retry_schedule=[timedelta(seconds=3600)])
        )
        sub_id = endpoint.subscription.id
        [hostile] = await publish(
            server, Event.create(type="order.paid", source="/shop", subject="order-1042", data=HOSTILE)
        )
        delivery = await delivery_of(server, sub_id, hostile.event_id)
        record, [failed] = await wait_attempts(server, delivery.delivery_id, 1)
        assert (record.state, failed.status_code) == ("pending", 500)
        # Two more orders that go through, so the page has some history.
        await publish(
            server,
            *(Event.create(type="order.created", source="/shop", subject=f"order-{n}", data={"n": n}) for n in (7, 8)),
        )
        await hook.wait_for(3)

        console: list[str] = []
        page.on("console", lambda message: console.append(message.text))
        await sign_in(page, dashboard_url, admin_key)
        subscriptions = page.locator("table.subscriptions")
        await expect(subscriptions).to_contain_text(sub_id)
        await subscriptions.get_by_role("link", name=sub_id).click()

        failures = page.locator("table.failures")
        await expect(failures).to_contain_text(delivery.delivery_id)
        await expect(failures).to_contain_text("HTTP 500")
        await expect(page.locator(".stat").first).to_contain_text("100%")  # nothing dead: 2 succeeded of 2 finished
        update = os.environ.get("EVENTBUS_UPDATE_SCREENSHOT", "") not in ("", "0")
        screenshot = README_SCREENSHOT if update else tmp_path / "dashboard.png"
        await page.screenshot(path=str(screenshot))
        assert screenshot.stat().st_size > 10_000

        await failures.get_by_role("link", name=delivery.delivery_id).click()
        attempts = page.locator("#attempts tbody tr")
        await expect(attempts).to_have_count(1)
        await expect(attempts.first).to_contain_text("HTTP 500")
        await expect(attempts.first).to_contain_text("database unavailable")
        await page.click("#resend")
        await expect(page.locator("#delivery-state")).to_have_text("succeeded")
        await expect(attempts).to_have_count(2)
        await expect(attempts.nth(1)).to_contain_text("HTTP 200")
        assert len(hook.requests) == 4

        await page.get_by_role("link", name=hostile.event_id).first.click()
        payload = page.locator("#payload")
        await expect(payload).to_contain_text("<script>window.__pwned = 1</script>")
        await expect(payload).to_contain_text("<img src=x onerror=window.__pwned=2>")
        await expect(page.locator("table.deliveries")).to_contain_text("succeeded")
        assert await page.evaluate("typeof window.__pwned") == "undefined"
        assert await page.evaluate("[...document.scripts].filter(s => s.textContent.includes('pwned')).length") == 0
        assert await page.evaluate("document.images.length") == 0

        await page.click("nav a[data-section=types]")
        await expect(page.locator("table.types")).to_contain_text("order.paid")
        await expect(page.locator("#banner")).to_be_hidden()
        assert [m for m in console if "Content Security Policy" in m] == []  # the page itself keeps to its CSP
    finally:
        await hook.close()


async def test_a_wrong_key_brings_the_form_back_with_the_reason(
    server: EventBusServer, admin_key: str, dashboard_url: str, page: Page
) -> None:
    from playwright.async_api import expect

    await sign_in(page, dashboard_url, admin_key)
    await expect(page.locator("h1")).to_have_text("Subscriptions")
    assert await page.evaluate("sessionStorage.getItem('eventbus.api_key')") == admin_key

    await page.click("#forget-key")
    await expect(page.locator("#key-form")).to_be_visible()
    assert await page.evaluate("sessionStorage.getItem('eventbus.api_key')") is None

    await page.fill("#api-key", "ebk_nobody_wrongsecret")
    await page.click("#key-form button[type=submit]")
    await expect(page.locator("#key-form .form-error")).to_contain_text("not valid")
    await expect(page.locator("nav")).to_be_hidden()

    publisher = await server.services.api_keys.create(["publish"], name="not-an-admin")
    await page.fill("#api-key", publisher.key)
    await page.click("#key-form button[type=submit]")
    await expect(page.locator("#key-form .form-error")).to_contain_text("lacks the 'admin' scope")

    # A key revoked while the dashboard is open: its next call brings the form back, saying why.
    second = await server.services.api_keys.create(["admin"], name="second-admin")
    await page.fill("#api-key", second.key)
    await page.click("#key-form button[type=submit]")
    await expect(page.locator("h1")).to_have_text("Subscriptions")
    await server.services.api_keys.revoke(second.info.key_id)
    await page.click("nav a[data-section=events]")
    await expect(page.locator("#key-form .form-error")).to_contain_text("not valid")


async def test_pause_resume_test_event_why_recover_and_search(
    server: EventBusServer, admin_key: str, dashboard_url: str, page: Page
) -> None:
    from playwright.async_api import expect

    hook = Receiver()
    await hook.start()
    try:
        endpoint = await server.services.subscriptions.create(
            SubscriptionInput(patterns=["invoice.*"], options={"url": hook.url})
        )
        sub_id = endpoint.subscription.id
        [issued, _] = await publish(
            server,
            Event.create(type="invoice.issued", source="/billing", subject="inv-1", data={"total": 12}),
            Event.create(type="refund.issued", source="/billing", subject="inv-1", data={"total": -3}),
        )
        await hook.wait_for(1)

        await sign_in(page, f"{dashboard_url}#/subscriptions/{sub_id}", admin_key)
        title = page.locator(".title-row")
        await expect(title).to_contain_text("active")
        await page.click("#pause")
        await expect(title).to_contain_text("paused")
        await expect(page.locator("#banner")).to_contain_text("Paused")
        await page.click("#resume")
        await expect(title).to_contain_text("active")

        await page.fill("#why-event", issued.event_id)
        await page.click("#why-form button[type=submit]")
        await expect(page.locator("#why-result")).to_contain_text("succeeded")
        await page.fill("#why-event", "evt_unknown")
        await page.click("#why-form button[type=submit]")
        await expect(page.locator("#banner")).to_contain_text("404")

        await page.click("#recover-form button[type=submit]")
        await expect(page.locator("#recover-form .result")).to_have_text("Re-queued 0 deliveries.")

        await page.click("#send-test")
        test_link = page.locator("#banner a")
        await expect(test_link).to_contain_text("dlv_")
        await test_link.click()
        await expect(page.locator("#delivery-state")).to_have_text("succeeded")  # the receiver answers 200
        await hook.wait_for(2)

        await page.click("nav a[data-section=events]")
        await page.fill("#search-pattern", "invoice.*")
        await page.fill("#search-source", "/billing")
        await page.click("#event-search button[type=submit]")
        rows = page.locator("table.events tbody tr")
        await expect(rows).to_have_count(1)
        await expect(rows.first).to_contain_text("invoice.issued")
        await expect(page.locator("#search-pattern")).to_have_value("invoice.*")  # the search is in the URL
    finally:
        await hook.close()


async def test_a_server_without_keys_opens_with_an_empty_key(
    server: EventBusServer, dashboard_url: str, page: Page
) -> None:
    from playwright.async_api import expect

    assert server.keys.open
    await sign_in(page, dashboard_url, "")
    await expect(page.locator("h1")).to_have_text("Subscriptions")
    await expect(page.locator(".empty")).to_contain_text("No subscriptions yet")
