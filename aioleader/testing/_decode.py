"""Decoding request bodies the way kube-apiserver does, including its error messages.

kube-apiserver decodes JSON into Go structs: unknown fields are dropped, ``null`` means absent, a
value of the wrong JSON type fails with ``json: cannot unmarshal …``, and a ``MicroTime`` must
parse with Go's layout ``2006-01-02T15:04:05.000000Z07:00`` (exactly six fractional digits). A
client that gets any of this wrong sees a 400 from a real cluster; the emulator answers the same
400 with the same text, and stores the object as the server would return it (times normalised to
UTC, fields in Go struct order).
"""

from __future__ import annotations

import calendar
import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, Final

__all__ = [
    "DecodeError",
    "Struct",
    "format_micro_time",
    "format_time",
    "go_json_loads",
    "json_kind",
    "parse_go_time",
    "summarize",
]

_INT32 = (-(2**31), 2**31 - 1)
_INT64 = (-(2**63), 2**63 - 1)


class DecodeError(Exception):
    """The body cannot be decoded; ``str(error)`` is the Go error text."""


# --- JSON syntax -------------------------------------------------------------------------------


def _reject_constant(name: str) -> Any:
    raise ValueError(name)


# One decoder for every body: json.loads with an option builds a new one per call.
_DECODER: Final = json.JSONDecoder(parse_constant=_reject_constant)


def _quote_char(ch: str) -> str:
    """Go's ``quoteChar`` as used in ``encoding/json`` syntax errors."""
    if ch == "'":
        return "'\\''"
    if ch == '"':
        return "'\"'"
    return "'" + json.dumps(ch)[1:-1] + "'"


def go_json_loads(data: bytes) -> Any:
    """Parse JSON, raising [`DecodeError`][DecodeError] with ``encoding/json``'s wording where we can.

    Go names the first offending character; we reproduce that for the common cases (an empty
    body, a body that is not JSON at all) and otherwise fall back to Python's description.
    """
    text = data.decode("utf-8", errors="replace")
    try:
        return _DECODER.decode(text)
    except ValueError as exc:
        stripped = text.lstrip(" \t\r\n")
        if not stripped:
            raise DecodeError("unexpected end of JSON input") from None
        first = stripped[0]
        if first not in '{["-0123456789tfn':
            raise DecodeError(
                f"invalid character {_quote_char(first)} looking for beginning of value"
            ) from None
        if isinstance(exc, json.JSONDecodeError):
            if exc.pos >= len(text.rstrip()):
                raise DecodeError("unexpected end of JSON input") from None
            raise DecodeError(f"invalid character {_quote_char(text[exc.pos])}") from None
        raise DecodeError(f"invalid character {_quote_char(first)}") from None


def summarize(data: bytes, limit: int = 30) -> str:
    """``summarizeData`` from the apiserver handlers: JSON-ish bodies as text, others as hex."""
    if not data:
        return "<empty>"
    if data[:1] == b"{":
        text = data[:limit].decode("utf-8", errors="replace")
        return text + " ..." if len(data) > limit else text
    return data[:limit].hex() + (" ..." if len(data) > limit else "")


# --- Go time parsing ---------------------------------------------------------------------------

RFC3339 = "2006-01-02T15:04:05Z07:00"
RFC3339_MICRO = "2006-01-02T15:04:05.000000Z07:00"


def _go_time_quote(text: str) -> str:
    """``time.quote``: non-ASCII and control bytes as ``\\x..``, quotes and backslashes escaped."""
    out = ['"']
    for ch in text:
        if ord(ch) >= 0x80 or ord(ch) < 0x20:
            out.extend(f"\\x{b:02x}" for b in ch.encode("utf-8"))
        elif ch in '"\\':
            out.append("\\" + ch)
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


class _ParseError(Exception):
    pass


def _is_digit(ch: str) -> bool:
    return "0" <= ch <= "9"


def _getnum(value: str, fixed: bool) -> tuple[int, str]:
    """Go's ``getnum``: one or two leading digits (exactly two when ``fixed``)."""
    if not value or not _is_digit(value[0]):
        raise _ParseError
    if len(value) < 2 or not _is_digit(value[1]):
        if fixed:
            raise _ParseError
        return int(value[0]), value[1:]
    return int(value[:2]), value[2:]


def parse_go_time(value: str, layout: str) -> datetime:
    """``time.Parse`` for the two RFC 3339 layouts kube uses, with Go's error messages.

    Returns an aware UTC datetime. Raises [`DecodeError`][DecodeError] whose text is exactly
    ``(*time.ParseError).Error()``.
    """
    micro = layout == RFC3339_MICRO
    year = month = day = hour = minute = second = 0
    microsecond = 0
    offset = 0
    rest = value

    def fail(element: str, at: str) -> DecodeError:
        return DecodeError(
            f"parsing time {_go_time_quote(value)} as {_go_time_quote(layout)}: "
            f"cannot parse {_go_time_quote(at)} as {_go_time_quote(element)}"
        )

    def out_of_range(what: str) -> DecodeError:
        return DecodeError(f"parsing time {_go_time_quote(value)}: {what} out of range")

    def skip(prefix: str) -> None:
        nonlocal rest
        if not rest.startswith(prefix):
            # Go reports the whole remaining value against the literal it expected.
            raise fail(prefix, rest)
        rest = rest[len(prefix) :]

    # 2006
    if len(rest) < 4 or not all(_is_digit(ch) for ch in rest[:4]):
        raise fail("2006", rest)
    year, rest = int(rest[:4]), rest[4:]
    for prefix, element in (("-", "01"), ("-", "02"), ("T", "15"), (":", "04"), (":", "05")):
        skip(prefix)
        hold = rest
        try:
            number, rest = _getnum(rest, fixed=element != "15")
        except _ParseError:
            raise fail(element, hold) from None
        if element == "01":
            if not 1 <= number <= 12:
                raise out_of_range("month")
            month = number
        elif element == "02":
            day = number
        elif element == "15":
            if number >= 24:
                raise out_of_range("hour")
            hour = number
        elif element == "04":
            if number >= 60:
                raise out_of_range("minute")
            minute = number
        else:
            if number >= 60:
                raise out_of_range("second")
            second = number
    if micro:
        hold = rest
        if len(rest) < 7 or rest[0] not in ".," or not all(_is_digit(ch) for ch in rest[1:7]):
            raise fail(".000000", hold)
        microsecond, rest = int(rest[1:7]), rest[7:]
    elif len(rest) >= 2 and rest[0] in ".," and _is_digit(rest[1]):
        # RFC3339 has no fractional element, but Go accepts any number of digits after seconds.
        end = 1
        while end < len(rest) and _is_digit(rest[end]):
            end += 1
        microsecond = int((rest[1:end] + "000000")[:6])
        rest = rest[end:]
    hold = rest
    if rest[:1] == "Z":
        rest = rest[1:]
    else:
        if len(rest) < 6 or rest[3] != ":":
            raise fail("Z07:00", hold)
        try:
            hours, _ = _getnum(rest[1:3], fixed=True)
            minutes, _ = _getnum(rest[4:6], fixed=True)
        except _ParseError:
            raise fail("Z07:00", hold) from None
        if hours > 24:
            raise out_of_range("time zone offset hour")
        if minutes > 60:
            raise out_of_range("time zone offset minute")
        if rest[0] not in "+-":
            raise fail("Z07:00", hold)
        offset = (hours * 60 + minutes) * 60 * (1 if rest[0] == "+" else -1)
        rest = rest[6:]
    if rest:
        raise DecodeError(
            f"parsing time {_go_time_quote(value)}: extra text: {_go_time_quote(rest)}"
        )
    if year < 1 or day < 1 or day > calendar.monthrange(year, month)[1]:
        # Go accepts year 0; Python cannot represent it, and nothing real writes it.
        raise out_of_range("day")
    try:
        local = datetime(year, month, day, hour, minute, second, microsecond)
        return (local - timedelta(seconds=offset)).replace(tzinfo=timezone.utc)
    except OverflowError:
        raise out_of_range("year") from None


def format_micro_time(moment: datetime) -> str:
    """``MicroTime.MarshalJSON``: UTC with exactly six fractional digits."""
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def format_time(moment: datetime) -> str:
    """``Time.MarshalJSON``: UTC, RFC 3339, whole seconds."""
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


_ZERO_TIME = datetime(1, 1, 1, tzinfo=timezone.utc)


# --- typed decoding ----------------------------------------------------------------------------


def json_kind(value: object) -> str:
    """The JSON type name Go puts in ``UnmarshalTypeError.Value``."""
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


@dataclass
class _Context:
    """Decoding state: the first soft type error is kept, like ``decodeState.savedError``."""

    saved: DecodeError | None = None

    def mismatch(self, value: object, struct: str, path: str, go_type: str) -> None:
        if self.saved is None:
            shown = json_kind(value)
            if (
                isinstance(value, (int, float))
                and not isinstance(value, bool)
                and go_type.startswith("int")
            ):
                shown = f"number {value}"
            self.saved = DecodeError(
                f"json: cannot unmarshal {shown} into Go struct field {struct}.{path} of type {go_type}"
            )


_Absent = object()
# A field decoder: (value, context, struct name, path) -> normalised value, or _Absent to drop it.
Decoder = Callable[[object, _Context, str, str], object]


def _string(value: object, ctx: _Context, struct: str, path: str) -> object:
    if isinstance(value, str):
        return value
    ctx.mismatch(value, struct, path, "string")
    return _Absent


def _omitempty_string(value: object, ctx: _Context, struct: str, path: str) -> object:
    decoded = _string(value, ctx, struct, path)
    return _Absent if decoded == "" else decoded


def _integer(go_type: str, bounds: tuple[int, int]) -> Decoder:
    def decode(value: object, ctx: _Context, struct: str, path: str) -> object:
        if (
            isinstance(value, int)
            and not isinstance(value, bool)
            and bounds[0] <= value <= bounds[1]
        ):
            return value
        ctx.mismatch(value, struct, path, go_type)
        return _Absent

    return decode


def _boolean(value: object, ctx: _Context, struct: str, path: str) -> object:
    if isinstance(value, bool):
        return value
    ctx.mismatch(value, struct, path, "bool")
    return _Absent


def _string_map(value: object, ctx: _Context, struct: str, path: str) -> object:
    if not isinstance(value, dict):
        ctx.mismatch(value, struct, path, "map[string]string")
        return _Absent
    result = {}
    for key, item in value.items():
        if item is None:
            result[key] = ""
        elif isinstance(item, str):
            result[key] = item
        else:
            ctx.mismatch(item, struct, path, "string")
    return result


def _string_list(value: object, ctx: _Context, struct: str, path: str) -> object:
    if not isinstance(value, list):
        ctx.mismatch(value, struct, path, "[]string")
        return _Absent
    result = []
    for item in value:
        if isinstance(item, str):
            result.append(item)
        else:
            ctx.mismatch(item, struct, path, "string")
    return result


def _any_list(value: object, ctx: _Context, struct: str, path: str) -> object:
    if isinstance(value, list):
        return value
    ctx.mismatch(value, struct, path, "[]interface {}")
    return _Absent


#: A MicroTime as every client writes it (UTC, six digits): parsing and rendering it again gives
#: it back unchanged, so a valid one is its own result (the emulator's hottest path: every
#: renewal carries one or two). ASCII digits only: ``\d`` would take any Unicode digit.
_CANONICAL_MICRO = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\.[0-9]{6}Z")
_CANONICAL_SECONDS = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}Z")


def _canonical_time(value: str, pattern: re.Pattern[str] = _CANONICAL_MICRO) -> bool:
    """Whether ``value`` is a valid canonical MicroTime (or, with ``_CANONICAL_SECONDS``, Time)
    other than the zero time (anything else, valid or not, goes through
    [`parse_go_time()`][parse_go_time], which also words Go's errors)."""
    # Years before 1000 are rendered differently from how they are written: the long way.
    if pattern.fullmatch(value) is None or value[0] == "0":
        return False
    try:
        datetime(
            int(value[0:4]),
            int(value[5:7]),
            int(value[8:10]),
            int(value[11:13]),
            int(value[14:16]),
            int(value[17:19]),
        )
    except ValueError:  # day 31 of a short month, hour 24, a leap second, year 0: Go's errors
        return False
    return True


def _time(layout: str, render: Callable[[datetime], str]) -> Decoder:
    """``Time``/``MicroTime.UnmarshalJSON``: a hard error, returned as Go returns it."""
    micro = layout == RFC3339_MICRO

    def decode(value: object, ctx: _Context, struct: str, path: str) -> object:
        if not isinstance(value, str):
            raise DecodeError(
                f"json: cannot unmarshal {json_kind(value)} into Go value of type string"
            )
        if _canonical_time(value, _CANONICAL_MICRO if micro else _CANONICAL_SECONDS):
            return value  # what rendering the parsed time would give back
        moment = parse_go_time(value, layout)
        return _Absent if moment == _ZERO_TIME else render(moment)

    return decode


STRING: Decoder = _string
OMITEMPTY_STRING: Decoder = _omitempty_string  # a non-pointer string with ``omitempty``
INT32: Decoder = _integer("int32", _INT32)
INT64: Decoder = _integer("int64", _INT64)
BOOL: Decoder = _boolean
STRING_MAP: Decoder = _string_map
STRING_LIST: Decoder = _string_list
ANY_LIST: Decoder = _any_list
MICRO_TIME: Decoder = _time(RFC3339_MICRO, format_micro_time)
TIME: Decoder = _time(RFC3339, format_time)


@dataclass(frozen=True)
class Struct:
    """A Go struct: its type name and its JSON fields in declaration (= output) order.

    ``open`` structs keep fields they do not know (for kinds the emulator stores without
    modelling, like Events); closed ones drop them, as Go does.
    """

    name: str
    fields: Mapping[str, Decoder | Struct] = field(default_factory=dict)
    open: bool = False
    always: bool = False  # emitted even when empty (a non-pointer struct without omitempty)

    def __call__(self, value: object, ctx: _Context, struct: str, path: str) -> object:
        if not isinstance(value, dict):
            ctx.mismatch(value, struct, path, f"v1.{self.name}")
            return _Absent
        return self._fields(value, ctx, path)

    def _fields(self, value: Mapping[str, object], ctx: _Context, path: str) -> dict[str, object]:
        result: dict[str, object] = {}
        for key, decoder in self.fields.items():
            if value.get(key) is None:
                if isinstance(decoder, Struct) and decoder.always:
                    result[key] = {}
                continue
            decoded = decoder(value[key], ctx, self.name, f"{path}.{key}" if path else key)
            if decoded is not _Absent:
                result[key] = decoded
        if self.open:
            result.update(
                (k, v) for k, v in value.items() if k not in self.fields and v is not None
            )
        return result

    def decode(self, document: Mapping[str, object]) -> dict[str, object]:
        """Decode a whole object (already JSON-parsed); raises [`DecodeError`][DecodeError]."""
        ctx = _Context()
        result = self._fields(document, ctx, "")
        if ctx.saved is not None:
            raise ctx.saved
        return result
