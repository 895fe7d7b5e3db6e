"""`pii-redactor`: removes personal data from prompts before they leave for the provider.

The pre-hook replaces e-mail addresses, phone numbers and payment card numbers in the text of
the request's messages with a marker such as `[EMAIL]`, so the provider (and its logs) never
sees them. Card numbers are recognised only when their digits pass the Luhn check, so order
numbers and other long numbers are left alone. The number of redactions is stored in the
request context as `pii.redacted` (for later plugins and the access log) and logged.

Config (all optional, unknown fields rejected):

| field      | type             | default                        | meaning                                        |
|------------|------------------|--------------------------------|------------------------------------------------|
| `kinds`    | list of strings  | `["email", "phone", "card"]`   | what to redact                                 |
| `roles`    | list of strings  | `["user", "system", "tool"]`   | roles of the messages that are redacted        |
| `marker`   | string           | `"[{KIND}]"`                   | replacement; `{KIND}`/`{kind}` name the kind    |
| `reject`   | bool             | `false`                        | refuse the request (400, no fallbacks) instead |

```json
{ "kinds": ["email", "card"], "marker": "<redacted {kind}>" }
```
"""

import re

from wasmgate_sdk import Continue, Fail, Plugin, config_error, error, export, info, parse_config

# An e-mail address: local part, @, a domain with a dot.
EMAIL = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}")
# 13 to 19 digits, optionally grouped by single spaces or dashes (checked with Luhn).
CARD = re.compile(r"(?<![\d-])\d(?:[ -]?\d){12,18}(?![\d-])")
# An international or national phone number: optional +country code, then 7-14 more digits
# grouped by spaces, dots, dashes or a parenthesised area code.
PHONE = re.compile(r"(?<![\w+])(?:\+\d{1,3}[ .-]?)?(?:\(\d{1,4}\)[ .-]?)?\d{2,4}(?:[ .-]?\d{2,4}){1,4}(?!\w)")

KINDS = ("email", "card", "phone")


def luhn(digits):
    """Whether a string of digits passes the Luhn checksum (payment card numbers do)."""
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if i % 2 == 1:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def looks_like_phone(text):
    """7-15 digits; a bare run of digits (no +, no separators) only up to 11 (a long bare number
    is more likely an id than a phone number)."""
    digits = re.sub(r"\D", "", text)
    bare = digits == text
    return 7 <= len(digits) <= (11 if bare else 15)


def redact(text, kinds, marker):
    """`text` with every match of `kinds` replaced by `marker`; and the number replaced."""
    count = 0

    def replace(kind, check=None):
        def sub(match):
            nonlocal count
            if check is not None and not check(match.group(0)):
                return match.group(0)
            count += 1
            return marker.replace("{KIND}", kind.upper()).replace("{kind}", kind)
        return sub

    # Cards before phones: a card number would also look like a long phone number.
    if "email" in kinds:
        text = EMAIL.sub(replace("email"), text)
    if "card" in kinds:
        text = CARD.sub(replace("card", lambda m: luhn(re.sub(r"\D", "", m))), text)
    if "phone" in kinds:
        text = PHONE.sub(replace("phone", looks_like_phone), text)
    return text, count


class PiiRedactor(Plugin):
    """Redacts e-mail addresses, phone numbers and card numbers in prompts."""

    name = "pii-redactor"
    # Nothing about a request is kept in `self`: any instance may serve any call.
    shared_instances = True

    def __init__(self, config):
        c = parse_config(config, optional={
            "kinds": (list, list(KINDS)),
            "roles": (list, ["user", "system", "tool"]),
            "marker": (str, "[{KIND}]"),
            "reject": (bool, False),
        })
        for i, kind in enumerate(c["kinds"]):
            if kind not in KINDS:
                raise config_error(f"kinds[{i}]", f"unknown kind {kind!r}, expected one of "
                                   + ", ".join(KINDS))
        for i, role in enumerate(c["roles"]):
            if not isinstance(role, str):
                raise config_error(f"roles[{i}]", f"expected a string, got {role!r}")
        self.kinds = set(c["kinds"])
        self.roles = set(c["roles"])
        self.marker = c["marker"]
        self.reject = c["reject"]

    def pre_hook(self, ctx, req):
        total = 0
        for message in req.messages:
            if message.role in self.roles and message.content:
                message.content, count = redact(message.content, self.kinds, self.marker)
                total += count
        if total and self.reject:
            return Fail(error(400, f"the request contains personal data ({total} items); "
                               "remove it and try again", kind="invalid_request_error",
                               code="pii_detected", fallbacks=False))
        ctx.set("pii.redacted", str(total))
        if total:
            info(f"redacted {total} personal data items from request {ctx.request_id()}")
            return Continue(req)
        return Continue()


WitWorld = export(PiiRedactor)
