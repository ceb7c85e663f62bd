"""Secrets, signatures and keys are compared in constant time: the modules that check them call
`hmac.compare_digest` (directly or through `eventbus.signing.constant_time_equals`), and none of them compares a
value whose name says secret, signature, digest, token or key with `==`, `!=` or `in` (AST check, so a new
comparison added later is caught too)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
# Every module that checks a caller-supplied credential against a known one.
CHECKERS = [
    "eventbus/auth.py",
    "eventbus/signing.py",
    "eventbus/plugin/helpers.py",
    *sorted(str(p.relative_to(ROOT)) for p in ROOT.glob("plugins/*/eventbus_*/connector.py")),
]
SECRETISH = re.compile(r"(secret|signature|digest|token|mac\b|hmac|key\b|^given$|^expected)", re.IGNORECASE)
COMPARE_DIGEST = (
    "compare_digest",
    "constant_time_equals",
    "signed_by_any",
    "verify_signature_header",
    "verify_standard_webhook",
)
# Comparisons on secret-named values that compare no secret: reviewed one by one.
REVIEWED = {
    # (file, source text of the comparison)
    ("eventbus/signing.py", "_b64encode(signature).rstrip('=') != encoded.rstrip('=')"),  # the spelling, post-verify
    ("eventbus/auth.py", "Scope.ADMIN in key.scopes"),  # which scopes a key has, once it is authenticated
    ("plugins/eventbus-rdstation/eventbus_rdstation/connector.py", "key in payload"),  # a JSON key
    ("plugins/eventbus-standardwebhooks/eventbus_standardwebhooks/connector.py", "key not in _OPTIONS"),  # an option
    # The sender's own signature against its canonical spelling: no secret is involved (checked before the HMAC).
    ("plugins/eventbus-shopify/eventbus_shopify/connector.py", "base64.b64encode(given).decode() != value"),
}


def names_in(node: ast.AST) -> list[str]:
    found: list[str] = []
    for child in ast.walk(node):
        if isinstance(child, ast.Name):
            found.append(child.id)
        elif isinstance(child, ast.Attribute):
            found.append(child.attr)
    return found


def risky_comparisons(path: str) -> list[str]:
    tree = ast.parse((ROOT / path).read_text(), filename=path)
    risky: list[str] = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Compare):
            continue
        if not any(isinstance(op, ast.Eq | ast.NotEq | ast.In | ast.NotIn) for op in node.ops):
            continue
        operands = [node.left, *node.comparators]
        # `x is None`-style and literal checks (`version == "v1"`, `len(x) == 32`) compare nothing secret.
        if any(isinstance(o, ast.Constant) for o in operands) or any(
            isinstance(o, ast.Call) and getattr(o.func, "id", "") == "len" for o in operands
        ):
            continue
        text = ast.unparse(node)
        if any(SECRETISH.search(name) for name in names_in(node)) and (path, text) not in REVIEWED:
            risky.append(f"{path}:{node.lineno}: {text}")
    return risky


@pytest.mark.parametrize("path", CHECKERS)
def test_credentials_are_compared_in_constant_time(path: str) -> None:
    source = (ROOT / path).read_text()
    assert any(name in source for name in COMPARE_DIGEST), (
        f"{path} checks credentials but never compares in constant time"
    )
    assert risky_comparisons(path) == []


def test_the_check_catches_a_plain_comparison(tmp_path: Path) -> None:
    """Control: the AST check flags what it is meant to flag."""
    (tmp_path / "leaky.py").write_text("def check(given, secret):\n    return given == secret\n")
    global ROOT
    saved, ROOT = ROOT, tmp_path
    try:
        assert risky_comparisons("leaky.py") == ["leaky.py:2: given == secret"]
    finally:
        ROOT = saved
