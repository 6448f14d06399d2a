"""mkdocs hooks: one page per reproduction, found on disk, with its figures and its table.

Every folder ``docs/reproductions/NAME/`` that holds a ``README.md`` (the page ``sgdlab
reproduce NAME`` writes beside its figures, ``table.md`` and ``results.json``) joins the
"Reproductions" section of the navigation, titled by the README's first heading; so a new
reproduction needs no edit of ``mkdocs.yml``. Its page shows every PNG of the folder that the
README does not already show as an image, and the contents of ``table.md``.
"""

from __future__ import annotations

import re
from pathlib import Path

SECTION = "Reproductions"
INDEX = "reproductions/index.md"


def reproduction_pages(docs_dir: str | Path) -> list[tuple[str, str]]:
    """(title, path relative to docs_dir) of each ``reproductions/NAME/README.md``, by NAME."""
    root = Path(docs_dir) / "reproductions"
    out = []
    for readme in sorted(root.glob("*/README.md")):
        first = next((ln for ln in readme.read_text().splitlines() if ln.startswith("# ")), "")
        title = first[2:].strip() or readme.parent.name
        out.append((title, readme.relative_to(docs_dir).as_posix()))
    return out


def _short(title: str, name: str) -> str:
    """The navigation label: the reproduction's command name, then its title up to a parenthesis."""
    return f"{name}: {title.split('(')[0].strip()}"


def on_config(config):
    pages = reproduction_pages(config["docs_dir"])
    for item in config["nav"]:
        if isinstance(item, dict) and SECTION in item:
            item[SECTION] = [INDEX] + [{_short(t, Path(p).parent.name): p} for t, p in pages]
    return config


def _shown(markdown: str) -> set[str]:
    return set(re.findall(r"!\[[^\]]*\]\(([^)\s]+)", markdown))


def on_page_markdown(markdown: str, page, config, files):
    src = page.file.src_uri
    if src == INDEX:
        rows = [f"- [{t}]({Path(p).relative_to('reproductions').as_posix()})"
                for t, p in reproduction_pages(config["docs_dir"])]
        return markdown.rstrip() + "\n\n" + "\n".join(rows) + "\n"
    m = re.fullmatch(r"reproductions/([^/]+)/README\.md", src)
    if not m:
        return markdown
    folder = Path(config["docs_dir"]) / "reproductions" / m.group(1)
    extra = []
    figures = [p.name for p in sorted(folder.glob("*.png")) if p.name not in _shown(markdown)]
    if figures:
        extra.append("## Figures\n")
        extra += [f"![{name}]({name})\n" for name in figures]
    table = folder / "table.md"
    if table.is_file():
        body = re.sub(r"^(#+) ", r"#\1 ", table.read_text(), flags=re.M)  # one level below the page's
        extra.append("## Table\n\n" + body)
    return markdown.rstrip() + "\n\n" + "\n".join(extra) if extra else markdown
