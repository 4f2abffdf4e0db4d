"""docs/bootcost.md shows what the committed sweeps measured: its table, its plot, and their agreement."""

from __future__ import annotations

from pathlib import Path

from pytest_pcie.bootcost import corpus, plot, sweep

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
FIRST, SECOND = DOCS / "bootcost/sweep-1.json", DOCS / "bootcost/sweep-2.json"


def test_table_on_the_page_is_the_first_sweep() -> None:
    rows = sweep.load(FIRST.read_text(encoding="utf-8"))
    assert sweep.table(rows) in (DOCS / "bootcost.md").read_text(encoding="utf-8")


def test_the_two_committed_sweeps_agree_to_a_tenth_of_a_millisecond() -> None:
    first, second = (sweep.load(path.read_text(encoding="utf-8")) for path in (FIRST, SECOND))
    assert [row.name for row in first] == [point.name for point in sweep.points()]
    assert sweep.differences(first, second) == []


def test_plot_is_what_the_first_sweep_draws() -> None:
    rows = sweep.load(FIRST.read_text(encoding="utf-8"))
    assert (DOCS / "bootcost/sweep.svg").read_text(encoding="utf-8") == plot.render(rows), (
        "run scripts/bootcost-sweep --plot docs/bootcost/sweep-1.json --svg docs/bootcost/sweep.svg"
    )


def test_corpus_tables_on_the_page_are_the_two_committed_corpus_runs() -> None:
    page = (DOCS / "bootcost.md").read_text(encoding="utf-8")
    for name, count in (("corpus-1.jsonl", 384), ("corpus-2.jsonl", 384)):
        reports = corpus.load((DOCS / "bootcost" / name).read_text(encoding="utf-8"))
        assert len(reports) == count
        assert corpus.table(reports, ROOT) in page, f"run scripts/bootcost-corpus docs/bootcost/{name}"


def test_the_page_counts_the_goldens_the_two_corpus_runs_disagree_on() -> None:
    runs = [DOCS / "bootcost" / name for name in ("corpus-1.jsonl", "corpus-2.jsonl")]
    first, second = (corpus.load(path.read_text(encoding="utf-8")) for path in runs)
    moved = {difference.topology for difference in corpus.differences(first, second)}
    page = " ".join((DOCS / "bootcost.md").read_text(encoding="utf-8").split())
    assert f"finds {len(first) - len(moved)} of the {len(first)} goldens identical" in page
