"""The documentation stays true: the metrics reference matches the exposition, and links resolve."""

import re
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from billingwatch.metrics import doc

ROOT = Path(__file__).resolve().parent.parent

PAGES = sorted([ROOT / "README.md", *(ROOT / "docs").rglob("*.md")])
LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)")
FENCE = re.compile(r"^```.*?^```", re.S | re.M)


def test_metrics_reference_is_generated_from_the_exposition() -> None:
    page = (ROOT / "docs" / "metrics.md").read_text()
    assert doc.updated(page, doc.render(doc.exposition())) == page, (
        "docs/metrics.md is stale: run python -m billingwatch.metrics.doc"
    )


def test_metrics_reference_lists_every_family_the_exporter_exposes() -> None:
    # Not vacuous: checks the generated page against a fresh exposition, family by family.
    page = (ROOT / "docs" / "metrics.md").read_text()
    names = [
        family.name + ("_total" if family.type == "counter" else "")
        for family in text_string_to_metric_families(doc.exposition())
        if family.name.startswith("billingwatch_")
    ]
    assert len(names) >= 25
    for name in names:
        assert f"| `{name}` |" in page, name


def test_metrics_reference_generator_replaces_only_its_block() -> None:
    block = doc.render("# HELP billingwatch_x_total Things.\n# TYPE billingwatch_x_total counter\n"
                       'billingwatch_x_total{kind="a"} 0.0\nbillingwatch_x_total{kind="b"} 0.0\n')
    page = f"intro\n{doc.BEGIN}\nold\n{doc.END}\noutro\n"
    new = doc.updated(page, block)
    assert new.startswith("intro\n") and new.endswith("\noutro\n") and "old" not in new
    assert "| `billingwatch_x_total` | counter | `kind` | Things. |" in new
    assert "- `kind` of `billingwatch_x_total`: `a`, `b`" in new


def anchors(path: Path) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces to hyphens."""
    text = FENCE.sub("", path.read_text())
    found = set()
    for heading in re.findall(r"^#{1,6} +(.+?) *$", text, re.M):
        slug = re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")
        found.add(slug)
    return found


def links(path: Path) -> list[str]:
    text = FENCE.sub("", path.read_text())
    text = re.sub(r"`[^`\n]*`", "", text)  # code spans are not links
    return [target for target in LINK.findall(text) if not re.match(r"[a-z]+:", target)]


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_point_to_existing_files_and_headings(page: Path) -> None:
    for target in links(page):
        file, _, anchor = target.partition("#")
        resolved = (page.parent / file).resolve() if file else page
        assert resolved.exists(), f"{page.relative_to(ROOT)}: {target} does not exist"
        if anchor and resolved.suffix == ".md":
            assert anchor in anchors(resolved), f"{page.relative_to(ROOT)}: no heading #{anchor} in {file or 'itself'}"


def test_link_checker_sees_broken_links(tmp_path: Path) -> None:
    (tmp_path / "a.md").write_text("# Top\n\n## Some section\n\n[ok](#some-section) [gone](b.md) [x](https://e.com)\n")
    assert links(tmp_path / "a.md") == ["#some-section", "b.md"]
    assert anchors(tmp_path / "a.md") == {"top", "some-section"}


def test_readme_links_every_docs_page() -> None:
    readme = (ROOT / "README.md").read_text()
    for page in sorted((ROOT / "docs").glob("*.md")):
        assert f"(docs/{page.name}" in readme, page.name
