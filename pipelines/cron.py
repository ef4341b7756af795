"""Cron expressions of `make schedule`: the standard 5 fields, checked here, and KFP's 6-field form.

    validate_cron("0 3 * * 1")  -> "0 3 * * 1"   (ConfigError naming the bad field otherwise)
    kfp_cron("0 3 * * 1")       -> "0 0 3 * * 1" (seconds first; Sunday 7 -> 0)

Fields: minute hour day-of-month month day-of-week, each `*`, a number or name (JAN.., SUN..),
ranges a-b, lists a,b and steps /n. Vertex AI takes the 5 fields as given (UTC), a crontab line too.
"""

from __future__ import annotations

from pipelines.config import ConfigError

_MONTHS = ["JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"]
_DAYS = ["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"]
# (name, lowest, highest, names for lowest.., in order)
CRON_FIELDS = (
    ("minute", 0, 59, []), ("hour", 0, 23, []), ("day-of-month", 1, 31, []),
    ("month", 1, 12, _MONTHS), ("day-of-week", 0, 7, _DAYS),
)
CRON_HELP = 'a 5-field cron "minute hour day-of-month month day-of-week", e.g. CRON="0 3 * * 1" (Mondays 03:00)'


def _cron_value(text: str, low: int, high: int, names: list[str]) -> bool:
    if text.upper() in names:
        return True
    return text.isdigit() and low <= int(text) <= high


def _cron_field_ok(field: str, low: int, high: int, names: list[str]) -> bool:
    for part in field.split(","):
        base, slash, step = part.partition("/")
        if slash and not (step.isdigit() and int(step) > 0):
            return False
        if base == "*":
            continue
        first, dash, last = base.partition("-")
        if not all(_cron_value(v, low, high, names) for v in ([first, last] if dash else [first])):
            return False
        if dash and first.isdigit() and last.isdigit() and int(first) > int(last):
            return False  # a reversed range
    return True


def validate_cron(cron: str) -> str:
    """The user's 5-field cron, whitespace-normalised, or a ConfigError naming the bad field."""
    fields = cron.split()
    if not cron.strip():
        raise ConfigError(f"CRON is not set: give {CRON_HELP}")
    if len(fields) != 5:
        raise ConfigError(f"CRON={cron!r} has {len(fields)} fields; give {CRON_HELP}")
    for field, (name, low, high, names) in zip(fields, CRON_FIELDS):
        if not _cron_field_ok(field, low, high, names):
            raise ConfigError(f"CRON={cron!r}: bad {name} field {field!r} ({low}-{high}); give {CRON_HELP}")
    return " ".join(fields)


def kfp_cron(cron: str) -> str:
    """KFP's scheduler (robfig/cron) takes 6 fields, seconds first: '0 3 * * 1' -> '0 0 3 * * 1';
    its day-of-week is 0-6, so Sunday-as-7 becomes 0."""
    fields = validate_cron(cron).split()
    fields[4] = ",".join("0" if part == "7" else part for part in fields[4].split(","))
    return "0 " + " ".join(fields)
