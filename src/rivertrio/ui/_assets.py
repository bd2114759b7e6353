"""The dashboard's own CSS and JavaScript, served from the package under versioned URLs.

A URL names the package version and a hash of the file, so browsers may cache
an asset for good and still never run an old script against a new page.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from importlib import resources

from .. import __version__

__all__ = ["Asset", "load_assets"]

_TYPES = {
    ".css": "text/css; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".svg": "image/svg+xml",
}


@dataclass(frozen=True, slots=True)
class Asset:
    """One static file: its bytes, content type and versioned path."""

    name: str
    body: bytes
    content_type: str
    version: str

    @property
    def path(self) -> str:
        """Its URL path below the dashboard's root."""
        return f"/static/{self.version}/{self.name}"


def load_assets() -> dict[str, Asset]:
    """Every file of ``rivertrio/ui/static``, by name."""
    assets = {}
    for entry in resources.files(__package__).joinpath("static").iterdir():
        suffix = "." + entry.name.rsplit(".", 1)[-1]
        if not entry.is_file() or suffix not in _TYPES:
            continue
        body = entry.read_bytes()
        version = f"{__version__}-{hashlib.sha256(body).hexdigest()[:10]}"
        assets[entry.name] = Asset(entry.name, body, _TYPES[suffix], version)
    return assets
