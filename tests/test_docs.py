"""The documentation stays true: every environment variable read is documented once, every link resolves."""

import re
from collections import Counter
from pathlib import Path

from bench.servers import PROJECT_ROOT

DOCUMENTS = [PROJECT_ROOT / "README.md", PROJECT_ROOT / "CHANGELOG.md", *sorted((PROJECT_ROOT / "docs").glob("*.md"))]
CODE = [
    *(PROJECT_ROOT / "livekit_auth").rglob("*.py"), *(PROJECT_ROOT / "bench").rglob("*.py"),
    *(PROJECT_ROOT / "tests").glob("*.py"), PROJECT_ROOT / "wsgi.py", PROJECT_ROOT / "gunicorn.conf.py",
    PROJECT_ROOT / "migrations" / "env.py",
]
NAME = r"([A-Z][A-Z0-9_]{2,})"
# The ways the code reads a variable: os.environ and a mapping of it, the settings' helpers that
# take its name, a name kept in a constant, and the shell's ${NAME}.
READS = [
    re.compile(rf"environ\.get\(\s*\"{NAME}\""),
    re.compile(rf"environ\[\"{NAME}\"\](?!\s*=[^=])"),
    re.compile(rf"\"{NAME}\" (?:not )?in os\.environ"),
    re.compile(rf"getenv\(\s*\"{NAME}\""),
    re.compile(rf"(?:whole_number|seconds|switch)\((?:environ, )?[\"']{NAME}[\"']"),
    re.compile(rf"require_service\(\s*\"{NAME}\""),
    re.compile(rf"_VARIABLE = \"{NAME}\""),
]
SHELL_READ = re.compile(rf"\$\{{{NAME}")
NOT_OURS = {"PATH"}  # the shell's own
# What a WSGI environ holds besides: the request, read through the same mapping interface.
WSGI = re.compile(r"HTTP_\w+|PATH_INFO|REMOTE_ADDR|REQUEST_METHOD|QUERY_STRING|SCRIPT_NAME|SERVER_\w+|CONTENT_\w+")
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
FENCE = re.compile(r"^```.*?^```", re.S | re.M)


def variables_read() -> set[str]:
    """Every environment variable the service, its tests and its benchmark read."""
    found = {name for path in CODE for pattern in READS for name in pattern.findall(path.read_text())}
    found |= set(SHELL_READ.findall((PROJECT_ROOT / "boot.sh").read_text()))
    return {name for name in found - NOT_OURS if not WSGI.fullmatch(name)}


def documented_rows() -> Counter[str]:
    """How many table rows, across the docs, document each variable."""
    rows = Counter[str]()
    for document in DOCUMENTS:
        rows.update(re.findall(r"^\| `([A-Z][A-Z0-9_]{2,})` \|", document.read_text(), re.M))
    return rows


def anchor(heading: str) -> str:
    """A heading's anchor, as GitHub makes it: lower case, punctuation dropped, spaces as hyphens."""
    text = re.sub(r"[`*]", "", heading.strip()).lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(document: Path) -> set[str]:
    """The anchors of a Markdown file's headings."""
    prose = FENCE.sub("", document.read_text())
    return {anchor(heading) for heading in re.findall(r"^#{1,6} (.+)$", prose, re.M)}


def test_the_scan_finds_the_variables_read_in_each_way() -> None:
    found = variables_read()
    assert {"DATABASE_URL", "KEY_CACHE_SIZE", "HOST", "WEB_CONCURRENCY", "LIVEKIT_AUTH_KEY_SIGNAL",
            "TEST_DATABASE_URL", "BENCH_REDIS_URL", "PROMETHEUS_MULTIPROC_DIR"} <= found


def test_every_environment_variable_read_is_documented_exactly_once() -> None:
    rows = documented_rows()
    assert sorted(name for name in variables_read() if rows[name] != 1) == []
    assert sorted(name for name in rows if name not in variables_read()) == []  # and nothing else is


def test_every_link_in_the_docs_resolves() -> None:
    broken = []
    for document in DOCUMENTS:
        for target in LINK.findall(FENCE.sub("", document.read_text())):
            if target.startswith(("http://", "https://", "mailto:")):
                continue  # no network here; the docs link out only to public pages
            path, _, fragment = target.partition("#")
            linked = (document.parent / path).resolve() if path else document
            if not linked.exists() or (fragment and fragment not in anchors(linked)):
                broken.append(f"{document.relative_to(PROJECT_ROOT)}: {target}")
    assert broken == []


def test_the_readme_is_a_front_door() -> None:
    assert len((PROJECT_ROOT / "README.md").read_bytes()) <= 10 * 1024
