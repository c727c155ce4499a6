"""MkDocs hook: links that work on GitHub and in the site alike.

The repository's Markdown links to files outside ``docs/`` (``../BENCHMARKS.md``, ``../src/modman/...``). In the
site the root documents are pages of their own (``BENCHMARKS.md`` → ``benchmarks.md``, ``CHANGELOG.md`` →
``changelog.md``, ``CONTRIBUTING.md`` → ``contributing.md``, ``README.md`` → ``index.md``); a link to any other
file outside ``docs/`` (source, tests, benchmarks) becomes its path in code font. Pages that include a root
document get its text, read at build time, with its links rewritten from the repository root.
"""

from __future__ import annotations

import posixpath
import re

ROOT_PAGES = {
    "BENCHMARKS.md": "benchmarks.md",
    "CHANGELOG.md": "changelog.md",
    "CONTRIBUTING.md": "contributing.md",
    "README.md": "index.md",
}
INCLUDED_FROM_ROOT = {page for page in ROOT_PAGES.values() if page != "index.md"}  # pages that show a root document
LINK = re.compile(r"(!?)\[([^\]]*)\]\(([^)\s]+)\)")


def site_link(target: str, origin: str, page_dir: str) -> str | None:
    """The link to ``target``, written in the repository folder ``origin``, from the site folder ``page_dir``;
    None when it names no page or file of the site."""
    path, sep, anchor = target.partition("#")
    resolved = posixpath.normpath(posixpath.join(origin, path))
    if resolved.startswith("docs/"):
        site_target = resolved[len("docs/") :]
    elif resolved in ROOT_PAGES:
        site_target = ROOT_PAGES[resolved]
    else:
        return None
    return posixpath.relpath(site_target, page_dir or ".") + sep + anchor


def on_page_markdown(markdown: str, page, config, files) -> str:
    src = page.file.src_uri
    if src in INCLUDED_FROM_ROOT:  # the page stands for a root document: its text, read here
        root = posixpath.dirname(posixpath.abspath(config["config_file_path"]))
        name = next(k for k, v in ROOT_PAGES.items() if v == src)
        with open(posixpath.join(root, name), encoding="utf-8") as f:
            markdown = f.read()
    page_dir = posixpath.dirname(src)
    origin = "." if src in INCLUDED_FROM_ROOT else posixpath.join("docs", page_dir)

    def replace(match: re.Match) -> str:
        bang, text, target = match.groups()
        if re.match(r"^[a-z]+:", target) or target.startswith("#"):
            return match.group(0)
        new = site_link(target, origin, page_dir)
        if new is None:  # a file outside the site: its repository path
            path = posixpath.normpath(posixpath.join(origin, target.partition("#")[0]))
            return f"{text} (`{path}`)" if text and not bang else f"`{path}`"
        return f"{bang}[{text}]({new})"

    return LINK.sub(replace, markdown)
