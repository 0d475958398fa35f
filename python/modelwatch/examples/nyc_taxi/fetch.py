"""Downloading TLC months (the demo's two months ship inside the package)."""

from __future__ import annotations

import re
import shutil
import urllib.error
import urllib.request
from pathlib import Path

from modelwatch.errors import InputError, ModelwatchError

TLC_BASE_URL = "https://d37ci6vzurychx.cloudfront.net/trip-data"
_MONTH = re.compile(r"^(\d{4})-(0[1-9]|1[0-2])$")


def month_file_name(month: str, kind: str = "green") -> str:
    if not _MONTH.match(month):
        raise InputError(f"month {month!r} is not YYYY-MM")
    return f"{kind}_tripdata_{month}.parquet"


def fetch_month(month: str, out_dir: Path, base_url: str = TLC_BASE_URL, timeout_s: float = 60.0) -> Path:
    """Download one month's parquet file into out_dir (written atomically); return its path."""
    name = month_file_name(month)
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / name
    partial = target.with_suffix(".parquet.part")
    url = f"{base_url.rstrip('/')}/{name}"
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response, partial.open("wb") as handle:
            shutil.copyfileobj(response, handle)
    except urllib.error.HTTPError as exc:
        partial.unlink(missing_ok=True)
        raise InputError(f"{url}: HTTP {exc.code} {exc.reason}") from None
    except (urllib.error.URLError, OSError) as exc:
        partial.unlink(missing_ok=True)
        raise ModelwatchError(f"{url}: download failed ({getattr(exc, 'reason', exc)})") from None
    partial.replace(target)
    return target
