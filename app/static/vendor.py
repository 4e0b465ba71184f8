"""Fetch the pinned front-end packages into ``app/static/vendor/``.

The app serves every asset itself (no CDN), and third-party files are not
committed: this downloads each pinned tarball from the npm registry, checks
it against the integrity hash recorded here (the registry's own
``dist.integrity``), and extracts only the files the app uses: htmx for
the browser, and Natural Earth's country shapes (world-atlas, TopoJSON)
that the server projects into the location map. Files already present are
left alone, so running it again is a no-op.

    python app/static/vendor.py
"""
from __future__ import annotations

import base64
import hashlib
import io
import sys
import tarfile
import urllib.request
from dataclasses import dataclass
from pathlib import Path

VENDOR_DIR = Path(__file__).resolve().parent / "vendor"
REGISTRY = "https://registry.npmjs.org"


@dataclass(frozen=True)
class Package:
    name: str
    version: str
    # ``npm view <name>@<version> dist.integrity``
    integrity: str
    # path inside the tarball -> file name under vendor/
    files: dict[str, str]

    @property
    def tarball_url(self) -> str:
        return f"{REGISTRY}/{self.name}/-/{self.name}-{self.version}.tgz"


HTMX = Package(
    name="htmx.org",
    version="2.0.11",
    integrity="sha512-Thx/WtpeOQqSrqBCw/A1cwGJGg4UrVa3+sW0GmrM3p4gJgO89ecH4qtbnyzDDWFvBTqjnIMCgELTNt636dtamA==",
    files={"package/dist/htmx.js": "htmx.js"},
)
# Natural Earth 1:110m countries as TopoJSON; read by app.services.world_map.
WORLD_ATLAS = Package(
    name="world-atlas",
    version="2.0.2",
    integrity="sha512-IXfV0qwlKXpckz1FhwXVwKRjiIhOnWttOskm5CtxMsjgE/MXAYRHWJqgXOpM8IkcPBoXnyTU5lFHcYa5ChG0LQ==",
    files={"package/countries-110m.json": "countries-110m.json"},
)
PACKAGES = (HTMX, WORLD_ATLAS)


class IntegrityError(RuntimeError):
    """A downloaded tarball does not match its pinned hash."""


def verify(data: bytes, integrity: str) -> None:
    """Raise ``IntegrityError`` unless ``data`` matches an SRI string (sha512-...)."""
    algorithm, _, expected = integrity.partition("-")
    if algorithm != "sha512":
        raise IntegrityError(f"unsupported integrity algorithm {algorithm!r}")
    actual = base64.b64encode(hashlib.sha512(data).digest()).decode()
    if actual != expected:
        raise IntegrityError(f"sha512 mismatch: expected {expected}, got {actual}")


def install(package: Package, target: Path = VENDOR_DIR, fetch=None) -> list[Path]:
    """Download, verify and extract one package's files; returns what was written."""
    wanted = {name: target / out for name, out in package.files.items()}
    if all(path.exists() for path in wanted.values()):
        return []
    data = (fetch or _download)(package.tarball_url)
    verify(data, package.integrity)
    written = []
    target.mkdir(parents=True, exist_ok=True)
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as archive:
        for member_name, path in wanted.items():
            member = archive.getmember(member_name)
            extracted = archive.extractfile(member)
            if extracted is None:
                raise IntegrityError(f"{member_name} is not a file in {package.tarball_url}")
            tmp = path.with_suffix(path.suffix + ".part")
            tmp.write_bytes(extracted.read())
            tmp.replace(path)
            written.append(path)
    return written


def _download(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=60) as response:  # noqa: S310 - fixed https URL
        return response.read()


def main(target: Path = VENDOR_DIR) -> int:
    """Install every pinned package; 1 if any could not be."""
    failed = 0
    # One package that cannot be fetched does not keep the others away.
    for package in PACKAGES:
        try:
            written = install(package, target)
        except (OSError, IntegrityError, KeyError) as exc:
            print(f"error: cannot install {package.name}@{package.version}: {exc}", file=sys.stderr)
            failed += 1
            continue
        for path in written:
            print(f"installed {package.name}@{package.version}: {path.relative_to(target.parent)}",
                  file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
