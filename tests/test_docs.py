"""The docs a user's clone has: every link the README and docs/ make to a local file resolves inside the project."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")


def test_local_links_resolve_inside_the_project():
    for doc in DOCS:
        for target in LINK.findall(doc.read_text()):
            if "://" in target:
                continue
            path = (doc.parent / target).resolve()
            assert path.is_relative_to(ROOT), f"{doc.name} links outside the project: {target}"
            assert path.exists(), f"{doc.name} links to a missing file: {target}"


def test_design_doc_maps_every_module():
    design = (ROOT / "docs" / "design.md").read_text()
    modules = [p.name for p in (ROOT / "onnxprune").glob("*.py") if p.name not in ("__init__.py", "errors.py")]
    missing = [m for m in modules if m not in design]
    assert not missing, f"docs/design.md does not place these modules: {missing}"
