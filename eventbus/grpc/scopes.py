"""gRPC auth: the one table of what every RPC needs (a scope, or nothing), the contract the servicers enforce."""

from __future__ import annotations

from typing import Final

from eventbus.auth import OPEN, Access, Scope

_EVENTBUS = "/eventbus.v1.EventBus/"
_ADMIN = "/eventbus.v1.Admin/"

# Every RPC by its method path (DESIGN.md §5 Auth). Each servicer method passes its scope to `rpc()`;
# tests/test_scopes.py lists every RPC of every service the server registers, fails when one is missing here, and
# calls each without a key, with a key lacking this scope and with one holding it, so the two cannot drift apart.
RPC_ACCESS: Final[dict[str, Access]] = {
    _EVENTBUS + "Publish": Scope.PUBLISH,
    _EVENTBUS + "Subscribe": Scope.SUBSCRIBE,
    _EVENTBUS + "GetEvent": Scope.SUBSCRIBE,
    _EVENTBUS + "ListEvents": Scope.SUBSCRIBE,
    _ADMIN + "ListGroups": Scope.ADMIN,
    _ADMIN + "GetGroup": Scope.ADMIN,
    _ADMIN + "SeekGroup": Scope.ADMIN,
    _ADMIN + "DeleteGroup": Scope.ADMIN,
    _ADMIN + "CreateSubscription": Scope.ADMIN,
    _ADMIN + "GetSubscription": Scope.ADMIN,
    _ADMIN + "ListSubscriptions": Scope.ADMIN,
    _ADMIN + "UpdateSubscription": Scope.ADMIN,
    _ADMIN + "DeleteSubscription": Scope.ADMIN,
    _ADMIN + "PauseSubscription": Scope.ADMIN,
    _ADMIN + "ResumeSubscription": Scope.ADMIN,
    _ADMIN + "RotateSubscriptionSecret": Scope.ADMIN,
    _ADMIN + "RecoverSubscription": Scope.ADMIN,
    _ADMIN + "Replay": Scope.ADMIN,
    _ADMIN + "ListDeliveries": Scope.ADMIN,
    _ADMIN + "GetDelivery": Scope.ADMIN,
    _ADMIN + "ResendDelivery": Scope.ADMIN,
    _ADMIN + "ExplainDelivery": Scope.ADMIN,
    _ADMIN + "CreateKey": Scope.ADMIN,
    _ADMIN + "ListKeys": Scope.ADMIN,
    _ADMIN + "RevokeKey": Scope.ADMIN,
    _ADMIN + "CreateSource": Scope.ADMIN,
    _ADMIN + "GetSource": Scope.ADMIN,
    _ADMIN + "ListSources": Scope.ADMIN,
    _ADMIN + "UpdateSource": Scope.ADMIN,
    _ADMIN + "RotateSourceSecret": Scope.ADMIN,
    _ADMIN + "DeleteSource": Scope.ADMIN,
    _ADMIN + "SendTestEvent": Scope.ADMIN,
    _ADMIN + "ListEventTypes": Scope.ADMIN,
    _ADMIN + "GetEventType": Scope.ADMIN,
    _ADMIN + "SetEventSchema": Scope.ADMIN,
    _ADMIN + "DeleteEventSchema": Scope.ADMIN,
    _ADMIN + "GetEvent": Scope.ADMIN,  # with the raw inbound request (its headers): not for `subscribe` keys
    # Probes and tooling must work without a key.
    "/grpc.health.v1.Health/Check": OPEN,
    "/grpc.health.v1.Health/Watch": OPEN,
    "/grpc.health.v1.Health/List": OPEN,
    "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo": OPEN,
}
