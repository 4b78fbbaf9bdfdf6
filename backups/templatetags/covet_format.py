"""Template filters for the dashboard: durations, compression ratios, short database names."""

from pathlib import PurePath

from django import template

register = template.Library()


@register.filter
def duration(seconds: float | None) -> str:
    """Render seconds as '850 ms', '42 s', '3 m 05 s' or '2 h 07 m'; empty for None."""
    if seconds is None or seconds == "":
        return ""
    seconds = float(seconds)
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    whole = round(seconds)
    if whole < 60:
        return f"{whole} s"
    if whole < 3600:
        return f"{whole // 60} m {whole % 60:02d} s"
    return f"{whole // 3600} h {whole % 3600 // 60:02d} m"


@register.filter
def ratio(value: float | None) -> str:
    """Render a compression ratio as '3.21×'; empty for None."""
    return "" if value is None else f"{value:.2f}×"


@register.filter
def short_database(name: str) -> str:
    """Return a SQLite file path's last component; other database names unchanged."""
    return PurePath(name).name if "/" in name else name
