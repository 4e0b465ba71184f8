"""The pinned front-end packages: hash-checked, extracted once."""
import base64
import hashlib
import io
import tarfile

import pytest

from app.static import vendor


def _tarball(content: bytes) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        info = tarfile.TarInfo("package/dist/htmx.js")
        info.size = len(content)
        archive.addfile(info, io.BytesIO(content))
    return buffer.getvalue()


def _package(data: bytes) -> vendor.Package:
    integrity = "sha512-" + base64.b64encode(hashlib.sha512(data).digest()).decode()
    return vendor.Package("htmx.org", "0.0.0", integrity, {"package/dist/htmx.js": "htmx.js"})


def test_it_extracts_a_verified_tarball_once(tmp_path):
    data = _tarball(b"// htmx")
    fetched = []
    package = _package(data)
    written = vendor.install(package, tmp_path, fetch=lambda url: fetched.append(url) or data)
    assert written == [tmp_path / "htmx.js"] and (tmp_path / "htmx.js").read_bytes() == b"// htmx"
    assert fetched == ["https://registry.npmjs.org/htmx.org/-/htmx.org-0.0.0.tgz"]
    assert vendor.install(package, tmp_path, fetch=lambda url: pytest.fail("fetched again")) == []


def test_it_refuses_a_tarball_that_does_not_match_its_hash(tmp_path):
    package = _package(_tarball(b"// htmx"))
    with pytest.raises(vendor.IntegrityError, match="sha512 mismatch"):
        vendor.install(package, tmp_path, fetch=lambda url: _tarball(b"// tampered"))
    assert not (tmp_path / "htmx.js").exists()


def test_the_pinned_htmx_is_2x_and_served_by_the_app(client):
    htmx = vendor.HTMX
    assert htmx in vendor.PACKAGES
    assert htmx.version.startswith("2.") and htmx.integrity.startswith("sha512-")
    response = client.get("/static/vendor/htmx.js")
    assert response.status_code == 200 and b"htmx" in response.data[:2000]


def test_the_world_atlas_is_pinned_to_its_registry_hash():
    atlas = vendor.WORLD_ATLAS
    assert atlas in vendor.PACKAGES
    assert (atlas.name, atlas.version) == ("world-atlas", "2.0.2")
    # `npm view world-atlas@2.0.2 dist.integrity`
    assert atlas.integrity == ("sha512-IXfV0qwlKXpckz1FhwXVwKRjiIhOnWttOskm5CtxMsjgE/MXAYRHWJqgXOpM8IkcPBo"
                               "XnyTU5lFHcYa5ChG0LQ==")
    assert atlas.tarball_url == "https://registry.npmjs.org/world-atlas/-/world-atlas-2.0.2.tgz"
    assert atlas.files == {"package/countries-110m.json": "countries-110m.json"}


def test_one_package_that_cannot_be_fetched_does_not_keep_the_others_away(tmp_path, monkeypatch, capsys):
    good = _tarball(b"// htmx")
    monkeypatch.setattr(vendor, "PACKAGES", (
        vendor.Package("broken", "1.0.0", "sha512-AAAA", {"package/x.json": "x.json"}), _package(good)))

    def download(url):
        if "broken" in url:
            raise OSError("registry unreachable")
        return good

    monkeypatch.setattr(vendor, "_download", download)
    assert vendor.main(tmp_path) == 1
    assert (tmp_path / "htmx.js").read_bytes() == b"// htmx"
    assert "cannot install broken@1.0.0: registry unreachable" in capsys.readouterr().err
