"""What the Slicer Extensions Index's pull-request check will find in this repository.

The index's check (``scripts/check_description_files.py`` of Slicer/ExtensionsIndex) clones ``scm_url`` of the
submitted ``PASeg.json`` and, among other checks, reads the top-level ``CMakeLists.txt`` as text
(``check_cmakelists_content``):

* the first ``project(NAME`` (any case) must name the extension, i.e. the description file's name;
* ``set(EXTENSION_ICONURL "…")``, with only spaces before the closing parenthesis, is taken literally: no CMake
  variable is expanded; the value must start with ``http`` and download as a PNG, JPEG or GIF image (or as
  ``application/octet-stream`` from a URL ending in one of those suffixes);
* ``set(EXTENSION_SCREENSHOTURLS "…")``, with the closing parenthesis right after the quote, must hold at least one
  character; it is split on whitespace and every URL is fetched like the icon;
* the repository's name starts with ``Slicer`` (``Slicer-``, ``Slicer_``, ``SlicerExtension-`` …), the extension's
  name does not; ``scm_url`` is ``https`` or ``git``; a ``LICENSE`` file lies in the repository root; the
  description file has LF line endings only.

The rules are re-implemented here (no network): every URL must be the raw-file address of a file of this
repository, on the branch ``scm_revision`` of ``PASeg.json`` names, that exists here and is an image of the
type its suffix says.
"""

from __future__ import annotations

import json
import re
import urllib.parse
from pathlib import Path
from typing import Dict, List, Optional

import pytest

REPO = Path(__file__).resolve().parents[3]
EXTENSION = "PASeg"  # the description file is PASeg.json
IMAGE_MAGIC = {".png": (b"\x89PNG\r\n\x1a\n",), ".jpg": (b"\xff\xd8\xff",), ".jpeg": (b"\xff\xd8\xff",),
               ".gif": (b"GIF87a", b"GIF89a")}  # fmt: skip
REPOSITORY_PREFIXES = ("Slicer", "Slicer-", "Slicer_", "SlicerExtension-", "SlicerExtension_")
#: the screenshot shown in the README and the Extension Manager; kept small for the clone and the page
SCREENSHOT = REPO / "Screenshots" / "PASeg_prediction.png"
SCREENSHOT_MAX_BYTES = 300_000


def index_metadata(cmake_text: str) -> Dict[str, object]:
    """What the index's check reads from a top-level ``CMakeLists.txt``: ``project``, ``icon_url`` and
    ``screenshot_urls`` (``None`` where its pattern finds nothing), with the check's own matching rules."""
    project = re.search(r"project\s*\(\s*([^\s)]+)", cmake_text, re.IGNORECASE)
    icon = re.search(r'set\s*\(EXTENSION_ICONURL\s*"([^"]+)" *\)', cmake_text, re.IGNORECASE)
    shots = re.search(r'set\s*\(EXTENSION_SCREENSHOTURLS\s*"([^"]+)"\)', cmake_text, re.IGNORECASE)
    return {"project": project.group(1).strip("\"'") if project else None,
            "icon_url": icon.group(1).strip() if icon else None,
            "screenshot_urls": shots.group(1).split() if shots else None}  # fmt: skip


def raw_file_of(url: str, owner: str, repository: str, branch: str) -> Optional[str]:
    """The repository path a raw-file URL names, or ``None`` when it is not a raw file of ``owner/repository`` on
    ``branch`` (``https://raw.githubusercontent.com/OWNER/REPO/BRANCH/PATH``)."""
    prefix = f"https://raw.githubusercontent.com/{owner}/{repository}/{branch}/"
    if "${" in url or not url.startswith(prefix) or len(url) == len(prefix):
        return None
    return urllib.parse.unquote(url[len(prefix):])


def problems(cmake_text: str, entry: dict, root: Path, extension: str = EXTENSION) -> List[str]:
    """Everything the index's check would reject, and every URL that is not a file of ``root``'s repository."""
    found: List[str] = []
    scm = urllib.parse.urlsplit(entry.get("scm_url", ""))
    if scm.scheme not in ("https", "git"):
        found.append(f"scm_url scheme {scm.scheme!r} is neither https nor git")
    parts = scm.path.strip("/").split("/")
    owner, repository = parts[0], re.sub(r"\.git$", "", parts[-1])
    if not repository.startswith(REPOSITORY_PREFIXES):
        found.append(f"repository name {repository!r} does not start with 'Slicer'")
    if extension.lower().startswith("slicer"):
        found.append(f"extension name {extension!r} starts with 'Slicer'")
    branch = entry.get("scm_revision", "main")
    meta = index_metadata(cmake_text)
    if meta["project"] != extension:
        found.append(f"project() names {meta['project']!r}, not the extension {extension!r}")
    homepage = re.search(r'set\s*\(EXTENSION_HOMEPAGE\s*"([^"]+)"', cmake_text)
    if not homepage or not re.fullmatch(rf"https://github\.com/{owner}/{repository}(#\w+)?/?", homepage.group(1)):
        found.append(f"EXTENSION_HOMEPAGE {homepage and homepage.group(1)!r} is not https://github.com/{owner}/"
                     f"{repository}")
    urls = [("EXTENSION_ICONURL", meta["icon_url"])] if meta["icon_url"] else []
    if not meta["icon_url"]:
        found.append("no EXTENSION_ICONURL")
    if not meta["screenshot_urls"]:
        found.append("no EXTENSION_SCREENSHOTURLS (the list must not be empty)")
    urls += [("EXTENSION_SCREENSHOTURLS", u) for u in meta["screenshot_urls"] or []]
    for key, url in urls:
        path = raw_file_of(url, owner, repository, branch)
        if path is None:
            found.append(f"{key} {url!r} is not a raw file of {owner}/{repository} on {branch!r}")
            continue
        file = root / path
        magic = IMAGE_MAGIC.get(file.suffix.lower())
        if magic is None:
            found.append(f"{key} {url!r} does not end in .png, .jpg, .jpeg or .gif")
        elif not file.is_file():
            found.append(f"{key} {url!r} names {path}, which is not in the repository")
        elif not file.read_bytes().startswith(magic):
            found.append(f"{key} {url!r}: {path} is not a {file.suffix} image")
    return found


def _entry() -> dict:
    return json.loads((REPO / f"{EXTENSION}.json").read_text(encoding="utf-8"))


def test_the_index_check_would_accept_the_cmake_lists_and_the_description_file():
    cmake = (REPO / "CMakeLists.txt").read_text(encoding="utf-8")
    assert problems(cmake, _entry(), REPO) == []
    meta = index_metadata(cmake)
    assert len(meta["screenshot_urls"]) >= 1
    assert b"\r" not in (REPO / f"{EXTENSION}.json").read_bytes()  # the index wants LF line endings
    assert (REPO / "LICENSE").is_file()
    assert 'VERSION_LESS "5.8"' in cmake  # the supported versions the README states
    assert "3D Slicer 5.8 or later" in (REPO / "README.md").read_text(encoding="utf-8")


ICON = r'set\(EXTENSION_ICONURL "[^"]*"\)'
SHOTS = r'set\(EXTENSION_SCREENSHOTURLS "[^"]*"\)'
RAW = "https://raw.githubusercontent.com/PASeg/SlicerPASeg"


@pytest.mark.parametrize(("pattern", "replacement", "expected"), [
    (ICON, 'set(EXTENSION_ICONURL "${PASEG_REPOSITORY}/raw/main/PASeg.png")',
     "EXTENSION_ICONURL '${PASEG_REPOSITORY}/raw/main/PASeg.png' is not a raw file"),  # no variable is expanded
    (ICON, "", "no EXTENSION_ICONURL"),
    (SHOTS, 'set(EXTENSION_SCREENSHOTURLS "")', "no EXTENSION_SCREENSHOTURLS"),
    (SHOTS, f'set(EXTENSION_SCREENSHOTURLS "{RAW}/main/PASeg.png" )', "no EXTENSION_SCREENSHOTURLS"),  # " )"
    (SHOTS, f'set(EXTENSION_SCREENSHOTURLS "{RAW}/main/PASeg.png {RAW}/main/Screenshots/none.png")',
     "names Screenshots/none.png, which is not in the repository"),
    (SHOTS, f'set(EXTENSION_SCREENSHOTURLS "{RAW}/release/PASeg.png")', "is not a raw file of PASeg/SlicerPASeg on "
     "'main'"),
    (SHOTS, 'set(EXTENSION_SCREENSHOTURLS "https://github.com/PASeg/SlicerPASeg/raw/main/PASeg.png")',
     "is not a raw file"),
    (SHOTS, f'set(EXTENSION_SCREENSHOTURLS "{RAW}/main/README.md")', "does not end in .png, .jpg, .jpeg or .gif"),
    (SHOTS, f'set(EXTENSION_SCREENSHOTURLS "{RAW}/main/docs/screenshot.png")', "not in the repository"),
    (r"project\(PASeg\)", "project(PASegExtension)", "project() names 'PASegExtension', not the extension"),
    (r'set\(EXTENSION_HOMEPAGE "[^"]*"\)', 'set(EXTENSION_HOMEPAGE "${PASEG_REPOSITORY}#readme")',
     "EXTENSION_HOMEPAGE '${PASEG_REPOSITORY}#readme' is not"),
])  # fmt: skip
def test_the_check_rejects_what_the_index_would_reject(pattern, replacement, expected):
    """Each rule can fail: the real CMakeLists.txt with one line broken as a pull request might break it."""
    cmake = (REPO / "CMakeLists.txt").read_text(encoding="utf-8")
    broken, count = re.subn(pattern, lambda m: replacement, cmake)
    assert count == 1, f"CMakeLists.txt no longer has one {pattern!r}"
    found = problems(broken, _entry(), REPO)
    assert any(expected in p for p in found), found


def test_the_check_reads_the_repository_and_branch_from_the_description_file(tmp_path):
    cmake = (REPO / "CMakeLists.txt").read_text(encoding="utf-8")
    moved = {**_entry(), "scm_url": "https://github.com/PASeg/SlicerPASegNew.git"}
    assert any("EXTENSION_HOMEPAGE" in p for p in problems(cmake, moved, REPO))
    assert any("EXTENSION_ICONURL" in p and "is not a raw file of PASeg/SlicerPASegNew" in p
               for p in problems(cmake, moved, REPO))
    branch = {**_entry(), "scm_revision": "v1.0"}
    assert any("on 'v1.0'" in p for p in problems(cmake, branch, REPO))
    assert any("does not start with 'Slicer'" in p
               for p in problems(cmake, {**_entry(), "scm_url": "https://github.com/PASeg/PASeg.git"}, REPO))
    assert any("neither https nor git" in p
               for p in problems(cmake, {**_entry(), "scm_url": "ssh://github.com/PASeg/SlicerPASeg.git"}, REPO))
    fake = tmp_path / "PASeg.png"  # a file named .png that is not a PNG image
    fake.write_text("not an image")
    (tmp_path / "Screenshots").mkdir()
    (tmp_path / "Screenshots" / "PASeg_prediction.png").write_bytes(SCREENSHOT.read_bytes())
    assert [p for p in problems(cmake, _entry(), tmp_path) if "is not a .png image" in p]


def test_the_screenshot_is_a_small_real_png():
    data = SCREENSHOT.read_bytes()
    assert data.startswith(IMAGE_MAGIC[".png"]) and len(data) < SCREENSHOT_MAX_BYTES, len(data)
    width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    assert 600 <= width <= 2000 and 300 <= height <= 1500, (width, height)
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    assert "(Screenshots/PASeg_prediction.png)" in readme  # shown at the top of the README


def test_the_readme_gives_the_clone_address_of_the_description_file():
    """The README's install-from-source steps clone the repository the index builds from."""
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    assert f"git clone {_entry()['scm_url']}" in readme
