"""The dependency versions synalinks-obs patches, as data: ``(lowest, first unsupported)``.

Checked before any patch is applied (``patching.install``); outside a range, one line
says what is not traced. ``scripts/check-latest`` tells when a new release breaks a
patch point.
"""

SUPPORTED = {
    "synalinks": ((0, 9), (1, 0)),
    "mlflow": ((3, 13), (4, 0)),
}


def installed(distribution: str) -> str | None:
    """The installed version of a distribution, from its metadata (no import)."""
    from importlib.metadata import PackageNotFoundError, version

    for name in (distribution, f"{distribution}-skinny"):
        try:
            return version(name)
        except PackageNotFoundError:
            continue
    return None


def parse(text: str | None) -> tuple[int, int] | None:
    """``(major, minor)`` of a version string (``"0.10.14"`` -> ``(0, 10)``), or None."""
    import re

    found = re.match(r"(\d+)\.(\d+)", text or "")
    return (int(found.group(1)), int(found.group(2))) if found else None


def describe(distribution: str) -> str:
    low, high = SUPPORTED[distribution]
    return f">={low[0]}.{low[1]},<{high[0]}.{high[1]}"


def is_supported(distribution: str, text: str | None = None) -> bool:
    """Whether the installed (or given) version of ``distribution`` is in its range."""
    parsed = parse(text if text is not None else installed(distribution))
    if parsed is None:
        return False
    low, high = SUPPORTED[distribution]
    return low <= parsed < high
