"""Declared sources and subscriptions made real: created, changed or removed through the service layer.

The file owns what it declared (a marker row per resource, `store/managed.py`): a declaration whose fingerprint
is the one last applied is left alone, so an operator's pause or a rotated-in secret stays until the file
changes; one that left the file is deleted, with a log line. What was created through the API is never touched.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import timedelta

import structlog

from eventbus.bus.services import Services
from eventbus.bus.sources import SourceInput
from eventbus.bus.subscriptions import SubscriptionInput
from eventbus.bus.webhooks import active_secrets
from eventbus.configuration.file import WEBHOOK_KEYS, Declarations, DeclaredSource, DeclaredSubscription
from eventbus.errors import AlreadyExistsError, EventBusError, FieldViolation, InvalidArgumentError
from eventbus.store.base import Subscription, SubscriptionState
from eventbus.store.managed import SOURCE, SUBSCRIPTION, ManagedRecord, ManagedStore

log = structlog.get_logger("eventbus.config")


@dataclass(slots=True)
class ApplyReport:
    """What applying the declarations did; `errors` name the declaration at fault (`subscriptions[1].url: ...`)."""

    created: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    errors: list[FieldViolation] = field(default_factory=list)


def _at(path: str, exc: EventBusError, webhook: bool = False) -> list[FieldViolation]:
    """The service layer names its own fields (`options.url`); say where they are in the file instead."""
    if not isinstance(exc, InvalidArgumentError) or not exc.violations:
        return [FieldViolation(path, exc.message)]
    found = []
    for violation in exc.violations:
        name = violation.field
        if webhook and name.startswith("options.") and name.split(".")[1].split("[")[0] in WEBHOOK_KEYS:
            name = name.removeprefix("options.")
        found.append(FieldViolation(f"{path}.{name}", violation.detail))
    return found


class DeclaredResources:
    """Applies a file's `Declarations`; one instance per server, used at start-up and on every reload."""

    def __init__(self, services: Services, store: ManagedStore) -> None:
        self.services = services
        self.store = store

    async def apply(self, declarations: Declarations) -> ApplyReport:
        report = ApplyReport()
        records = {(r.resource, r.name): r for r in await self.store.list_managed()}
        for source in declarations.sources:
            try:
                await self._source(source, records.get((SOURCE, source.name)), report)
            except EventBusError as exc:
                report.errors += _at(source.path, exc)
        for subscription in declarations.subscriptions:
            try:
                await self._subscription(subscription, records.get((SUBSCRIPTION, subscription.name)), report)
            except EventBusError as exc:
                report.errors += _at(subscription.path, exc, webhook=subscription.kind == "webhook")
        declared = {(SOURCE, s.name) for s in declarations.sources}
        declared |= {(SUBSCRIPTION, s.name) for s in declarations.subscriptions}
        for key, record in sorted(records.items()):
            if key not in declared:
                await self._remove(record, report)
        log.info(
            "config_resources_applied",
            created=report.created,
            updated=report.updated,
            removed=report.removed,
            unchanged=len(report.unchanged),
            errors=[f"{v.field}: {v.detail}" for v in report.errors],
        )
        return report

    async def _mark(self, resource: str, name: str, resource_id: str, digest: str) -> None:
        now = self.services.bus.clock.now()
        await self.store.put_managed(ManagedRecord(resource, name, resource_id, digest, now))

    async def _claim(self, resource: str, name: str, record: ManagedRecord | None) -> str:
        """The marker goes first, pending (no id yet): a crash, or another process, between making the resource and
        marking it leaves a claim by which the next apply adopts the resource instead of refusing its name. Returns
        this claim's token ("" when an earlier claim stands): only a resource made under another claim is adopted."""
        token = f"pending:{uuid.uuid4().hex}"
        pending = ManagedRecord(resource, name, "", token, self.services.bus.clock.now())
        if record is None:
            # Never over another process's marker (PostgreSQL): theirs stands and is adopted from.
            return token if await self.store.claim_managed(pending) else ""
        if not record.pending:
            await self.store.put_managed(pending)  # the resource it named is gone: a new one takes the name
            return token
        return ""

    async def _claimed(self, resource: str, name: str) -> ManagedRecord | None:
        """The marker of (resource, name) as it is now."""
        found = [r for r in await self.store.list_managed() if (r.resource, r.name) == (resource, name)]
        return found[0] if found else None

    # -- sources -------------------------------------------------------------------------------------------

    async def _source(self, declared: DeclaredSource, record: ManagedRecord | None, report: ApplyReport) -> None:
        sources = self.services.sources
        current = await sources.store.get_source(record.resource_id) if record and not record.pending else None
        label = f"source {declared.name}"
        token = ""
        if current is not None and record is not None and current.connector != declared.connector:
            # Another connector is another receiver: the old one goes, a new one takes the name (and the URL). The
            # new declaration is checked whole first, so a refused one (a misspelt connector) leaves the old working.
            sources.prepare(self._source_input(declared, declared.name))
            token = await self._claim(SOURCE, declared.name, record)  # the name's claim, over the old marker
            await sources.delete(current.id, declared=True)
            log.info("config_source_removed", source=declared.name, source_id=current.id, why="connector changed")
            current, record = None, None
        if current is None:
            sources.prepare(self._source_input(declared, declared.name))  # a refused one claims nothing
            token = token or await self._claim(SOURCE, declared.name, record)
            try:
                info = await sources.create(self._source_input(declared, declared.name))
            except AlreadyExistsError:
                existing = await sources.find(declared.name)
                claim = await self._claimed(SOURCE, declared.name)
                if claim is not None and not claim.pending and claim.resource_id == existing.id:
                    # Another process sharing the store (PostgreSQL) applied the same file first; its marker may
                    # have replaced its claim only now, so the marker is read once, after the refusal.
                    report.unchanged.append(label)
                    return
                ours = claim is not None and bool(token) and claim.digest == token
                if claim is None or not claim.pending or ours:
                    if ours:
                        await self.store.delete_managed(SOURCE, declared.name)  # ours, and no claim to the name
                    raise AlreadyExistsError(
                        f"a source named {declared.name!r} exists and was not made by the config file; the file "
                        "does not take it over: delete it (eventbus sources rm) or declare another name"
                    ) from None
                # Made under our pending claim (a crash before the marker, or another process right now): adopt it,
                # then give it this declaration.
                await self._mark(SOURCE, declared.name, existing.id, "")
                log.info("config_source_adopted", source=declared.name, source_id=existing.id)
                current, record = existing, None
            else:
                await self._mark(SOURCE, declared.name, info.source.id, declared.digest)
                log.info("config_source_created", source=declared.name, source_id=info.source.id)
                report.created.append(label)
                return
        if record is None or record.digest != declared.digest:
            if current.connector != declared.connector:
                raise InvalidArgumentError.for_field(
                    "connector", f"the source is a {current.connector!r} one: delete it or declare another name"
                )
            await sources.update(current.id, self._source_input(declared, ""), declared=True)
            await self._mark(SOURCE, declared.name, current.id, declared.digest)
            log.info("config_source_updated", source=declared.name, source_id=current.id)
            report.updated.append(label)
        else:
            report.unchanged.append(label)

    @staticmethod
    def _source_input(declared: DeclaredSource, name: str) -> SourceInput:
        return SourceInput(
            name=name,
            connector=declared.connector,
            secrets=list(declared.secrets),
            options=declared.options,
            enabled=declared.enabled,
            rate_limit=declared.rate_limit or 0.0,
        )

    # -- subscriptions -------------------------------------------------------------------------------------

    async def _subscription(
        self, declared: DeclaredSubscription, record: ManagedRecord | None, report: ApplyReport
    ) -> None:
        subscriptions = self.services.subscriptions
        label = f"subscription {declared.name}"
        store = self.services.bus.store
        current = await store.get_subscription(record.resource_id) if record and not record.pending else None
        if current is not None and current.state == "deleted":
            current = None
        if current is None:
            await self._claim(SUBSCRIPTION, declared.name, record)
            # Only the file names subscriptions: one of this kind and name was made under a claim (a crash before
            # its marker, or another process sharing the store) and is adopted, not created again.
            existing = await store.find_subscription(declared.kind, declared.name)
            if existing is None:
                # (Should another process make it in between, `create` returns that one: the same file's.)
                current = (await subscriptions.create(self._subscription_input(declared))).subscription
                await self._mark(SUBSCRIPTION, declared.name, current.id, declared.digest)
                log.info("config_subscription_created", name=declared.name, subscription_id=current.id)
                report.created.append(label)
                return
            marker = await self.store.find_managed(existing.id)
            if marker is not None and marker.digest == declared.digest:
                report.unchanged.append(label)  # another process applied the same file first
                return
            await self._mark(SUBSCRIPTION, declared.name, existing.id, "")
            log.info("config_subscription_adopted", name=declared.name, subscription_id=existing.id)
            current, record = existing, None
        if record is not None and record.digest == declared.digest:
            report.unchanged.append(label)
            return
        if current.kind != declared.kind:
            raise InvalidArgumentError.for_field(
                "kind", f"cannot change from {current.kind} to {declared.kind}: declare it under a new name"
            )
        if current.ordering.value != declared.ordering:
            raise InvalidArgumentError.for_field(
                "ordering", f"cannot change on a live subscription ({current.ordering.value}): use a new name"
            )
        spec = self._subscription_input(declared, current)
        await subscriptions.update(current.id, spec, declared=True)
        if declared.paused and current.state == SubscriptionState.ACTIVE:
            await subscriptions.set_state(current.id, SubscriptionState.PAUSED, "paused by the config file")
        elif not declared.paused and current.state == SubscriptionState.PAUSED:
            await subscriptions.set_state(current.id, SubscriptionState.ACTIVE)
        await self._mark(SUBSCRIPTION, declared.name, current.id, declared.digest)
        log.info("config_subscription_updated", name=declared.name, subscription_id=current.id)
        report.updated.append(label)

    def _subscription_input(
        self, declared: DeclaredSubscription, current: Subscription | None = None
    ) -> SubscriptionInput:
        """The whole declaration. On an update, options the file no longer gives are set to None (their default,
        or gone), and a webhook secret equal to the one signing now is left out so it does not count as a
        rotation."""
        options: dict[str, object] = dict(declared.options)
        if current is not None:
            gone = set(current.options) | set(current.secrets)
            if declared.kind == "webhook":
                gone = set(WEBHOOK_KEYS) - {"secret"}
                signing = active_secrets(current.secrets, self.services.bus.clock.now())
                if signing and signing[0] == options.get("secret"):
                    options.pop("secret")
            options = {**dict.fromkeys(gone - set(options)), **options}
        defaults = self.services.bus.settings
        return SubscriptionInput(
            kind=declared.kind,
            name=declared.name,
            patterns=list(declared.patterns),
            filter=declared.filter or "",
            options=options,
            retry_schedule=_schedule(declared.retry_schedule, defaults.retry_schedule),
            rate_limit=declared.rate_limit or 0.0,
            max_concurrency=declared.max_concurrency or 0,
            max_pending_age=declared.max_pending_age or defaults.max_pending_age,
            ordering=declared.ordering,
            paused=declared.paused,
        )

    # -- removal -------------------------------------------------------------------------------------------

    async def _remove(self, record: ManagedRecord, report: ApplyReport) -> None:
        """It left the file: it goes (a resource already gone only loses its marker)."""
        if record.pending:
            record = await self._adopt_for_removal(record)
        try:
            if record.pending:
                pass  # claimed, never made
            elif record.resource == SOURCE:
                if await self.services.sources.store.get_source(record.resource_id) is not None:
                    await self.services.sources.delete(record.resource_id, declared=True)
            else:
                found = await self.services.bus.store.get_subscription(record.resource_id)
                if found is not None and found.state != "deleted":
                    await self.services.subscriptions.delete(record.resource_id, declared=True)
        except EventBusError as exc:
            report.errors.append(FieldViolation(f"{record.resource} {record.name}", f"not removed: {exc.message}"))
            return
        await self.store.delete_managed(record.resource, record.name)
        log.info(
            "config_resource_removed",
            resource=record.resource,
            name=record.name,
            resource_id=record.resource_id,
            why="no longer in the config file",
        )
        report.removed.append(f"{record.resource} {record.name}")

    async def _adopt_for_removal(self, claim: ManagedRecord) -> ManagedRecord:
        """A pending claim's resource may exist (made, not yet marked): found by name and unmarked, it is the file's."""
        found: str | None = None
        if claim.resource == SOURCE:
            source = await self.services.sources.store.find_source(claim.name)
            found = source.id if source is not None else None
        else:
            for kind in self.services.subscriptions.kinds.names:
                subscription = await self.services.bus.store.find_subscription(kind, claim.name)
                if subscription is not None:
                    found = subscription.id
        if found is None or await self.store.find_managed(found) is not None:
            return claim
        return ManagedRecord(claim.resource, claim.name, found, "", claim.updated_at)


def _schedule(declared: tuple[timedelta, ...] | None, default: Sequence[timedelta]) -> list[timedelta]:
    return list(declared if declared is not None else default)
