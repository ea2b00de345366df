"""Semantic versions as kube-apiserver reads them (``github.com/blang/semver/v4``).

Validation of a LeaseCandidate uses the strict [`parse()`][parse] (``1.36.2``, ``1.36.0-rc.1``;
not ``1.36`` nor ``v1.36.2``); the election controller reads the stored versions with the
lenient [`parse_tolerant()`][parse_tolerant] (a ``v`` prefix, two components, leading zeros) and compares them
with [`Version.compare()`][Version.compare] (build metadata ignored, a pre-release before its release).
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["ZERO", "Version", "parse", "parse_tolerant"]

_NUMBERS = frozenset("0123456789")
_ALPHANUM = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ-0123456789")
_UINT64 = 2**64


@dataclass(frozen=True)
class Version:
    """``semver.Version``: the numbers, the pre-release parts (ints or strings) and the build."""

    major: int = 0
    minor: int = 0
    patch: int = 0
    pre: tuple[int | str, ...] = ()
    build: tuple[str, ...] = field(default=(), compare=False)

    def compare(self, other: Version) -> int:
        """-1, 0 or 1, as ``Version.Compare``."""
        mine, theirs = (self.major, self.minor, self.patch), (other.major, other.minor, other.patch)
        if mine != theirs:
            return -1 if mine < theirs else 1
        if not self.pre or not other.pre:
            # A release sorts after its pre-releases; two releases are equal.
            return (not self.pre) - (not other.pre)
        for left, right in zip(self.pre, other.pre, strict=False):
            if left == right:
                continue
            if isinstance(left, int) != isinstance(right, int):
                return -1 if isinstance(left, int) else 1  # numeric parts sort first
            return -1 if left < right else 1  # type: ignore[operator]
        return (len(self.pre) > len(other.pre)) - (len(self.pre) < len(other.pre))


ZERO = Version()


def _only(text: str, allowed: frozenset[str]) -> bool:
    return all(ch in allowed for ch in text)


def _number(text: str, what: str) -> int:
    if not _only(text, _NUMBERS):
        raise ValueError(f"Invalid character(s) found in {what} number {text!r}")
    if len(text) > 1 and text[0] == "0":
        raise ValueError(f"{what.capitalize()} number must not contain leading zeroes {text!r}")
    if not text or int(text) >= _UINT64:
        raise ValueError(f"invalid {what} number {text!r}")
    return int(text)


def parse(text: str) -> Version:
    """``semver.Parse``: ``MAJOR.MINOR.PATCH[-PRE][+BUILD]``; raises ValueError."""
    if not text:
        raise ValueError("Version string empty")
    parts = text.split(".", 2)
    if len(parts) != 3:
        raise ValueError("No Major.Minor.Patch elements found")
    major = _number(parts[0], "major")
    minor = _number(parts[1], "minor")
    patch_text, build_text, pre_text = parts[2], None, None
    if "+" in patch_text:
        patch_text, build_text = patch_text.split("+", 1)
    if "-" in patch_text:
        patch_text, pre_text = patch_text.split("-", 1)
    patch = _number(patch_text, "patch")
    pre: list[int | str] = []
    for part in pre_text.split(".") if pre_text is not None else ():
        if not part:
            raise ValueError("Prerelease is empty")
        if _only(part, _NUMBERS):
            pre.append(_number(part, "prerelease"))
        elif _only(part, _ALPHANUM):
            pre.append(part)
        else:
            raise ValueError(f"Invalid character(s) found in prerelease {part!r}")
    build = build_text.split(".") if build_text is not None else []
    for part in build:
        if not part or not _only(part, _ALPHANUM):
            raise ValueError(f"Invalid build meta data {part!r}")
    return Version(major, minor, patch, tuple(pre), tuple(build))


def parse_tolerant(text: str) -> Version:
    """``semver.ParseTolerant``: trims spaces and a ``v``, drops leading zeros, fills ``.0``."""
    text = text.strip().removeprefix("v")
    parts = text.split(".", 2)
    for index, part in enumerate(parts):
        if len(part) > 1:
            part = part.lstrip("0")
            if not part or part[0] not in _NUMBERS:
                part = "0" + part
            parts[index] = part
    if len(parts) < 3:
        if "+" in parts[-1] or "-" in parts[-1]:
            raise ValueError("Short version cannot contain PreRelease/Build meta data")
        parts += ["0"] * (3 - len(parts))
    return parse(".".join(parts))
