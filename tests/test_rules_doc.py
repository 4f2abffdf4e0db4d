"""scripts/gen-rules-doc: the rules page lists each rule with the cases pinning it, gaps and unknown ids.

The generator runs as a subprocess, exactly as a contributor or CI runs it, on small synthetic trees
in tmp_path; the last test checks that the committed docs/rules.md matches the real cases.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "gen-rules-doc"

RULES = """\
[rules."alpha.one"]
title = "First alpha rule"
text = "What the first alpha rule says."

[rules."alpha.two"]
title = "Second alpha rule"
text = "A rule no case pins."

[rules."beta.three"]
title = "The beta rule"
text = "What the beta rule says."
"""

INPUT = "<domain><devices/></domain>\n"


def run(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(SCRIPT), "--root", str(root), *args], capture_output=True, text=True, check=False
    )


def write_case(root: Path, case_id: str, machines: str, rules: str, extra: str = "") -> None:
    folder = root / "cases" / case_id
    folder.mkdir(parents=True)
    (folder / "input.xml").write_text(INPUT)
    (folder / "case.toml").write_text(
        f'description = "a case in {case_id}"\nmachines = {machines}\noperation = "define"\nrules = {rules}\n{extra}'
    )


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    (tmp_path / "rules.toml").write_text(RULES)
    write_case(tmp_path, "area/both-machines", '["pc", "q35"]', '["alpha.one"]')
    write_case(tmp_path, "area/refused", '["q35"]', '["alpha.one", "beta.three"]', 'expect-error = "refused"\n')
    return tmp_path


def test_page_lists_rules_with_their_cases_and_gaps(tree: Path) -> None:
    result = run(tree)
    assert result.returncode == 0, result.stderr
    page = (tree / "docs" / "rules.md").read_text()
    alpha_one = page.split("### `alpha.one`")[1].split("###")[0]
    assert "Holds on: pc, q35.\n" in alpha_one
    assert "- `area/both-machines` (pc, q35): a case in area/both-machines" in alpha_one
    assert "- `area/refused` (q35, expects an error): a case in area/refused" in alpha_one
    beta = page.split("### `beta.three`")[1].split("##")[0]
    assert "area/refused" in beta and "area/both-machines" not in beta
    assert "Holds on: q35.\n" in beta
    assert "**Gap:** no case pins this rule yet." in page.split("### `alpha.two`")[1].split("###")[0]
    gaps = page.split("## Gaps")[1].split("## Errors")[0]
    assert "`alpha.two`" in gaps and "`alpha.one`" not in gaps
    assert "- 3 rules, 2 pinned by at least one case, 1 gaps" in page
    assert page.index("## alpha") < page.index("## beta")
    assert "Groups: [alpha](#alpha) · [beta](#beta)" in page


def test_page_links_only_within_itself(tree: Path) -> None:
    """The page is served by MkDocs, which holds docs/ only: a link into cases/ or golden/ would be
    broken there, so cases are named as code spans and the only links are the page's own anchors."""
    write_case(tree, "area/typo", '["pc"]', '["alpha.on"]')
    write_case(tree, "area/unpinned", '["pc"]', "[]")
    run(tree)
    page = (tree / "docs" / "rules.md").read_text()
    targets = re.findall(r"\]\(([^)]*)\)", page)
    assert targets and all(target.startswith("#") for target in targets), targets


def test_unknown_rule_id_is_an_error_on_the_page_and_in_the_exit_status(tree: Path) -> None:
    write_case(tree, "area/typo", '["pc"]', '["alpha.on"]')
    result = run(tree)
    assert result.returncode == 1
    assert "cases/area/typo/case.toml: unknown rule 'alpha.on'" in result.stderr
    errors = (tree / "docs" / "rules.md").read_text().split("## Errors")[1]
    assert "unknown rule `alpha.on` named by `cases/area/typo/case.toml`" in errors


def test_check_reports_a_stale_page_without_writing(tree: Path) -> None:
    assert run(tree).returncode == 0
    assert run(tree, "--check").returncode == 0
    write_case(tree, "area/new", '["pc"]', '["alpha.two"]')
    page_before = (tree / "docs" / "rules.md").read_text()
    result = run(tree, "--check")
    assert result.returncode == 1
    assert "out of date" in result.stderr
    assert (tree / "docs" / "rules.md").read_text() == page_before


@pytest.mark.parametrize(
    ("rules_text", "complaint"),
    [
        ('[rules."a.b"]\ntitle = "only a title"\n', "must have exactly the keys 'title' and 'text'"),
        ("[rules\n", "not valid UTF-8 TOML"),
        ('title = "not in a rules table"\n', 'must hold only [rules."<id>"] tables'),
    ],
)
def test_malformed_rules_file_is_one_clear_line(tree: Path, rules_text: str, complaint: str) -> None:
    (tree / "rules.toml").write_text(rules_text)
    result = run(tree)
    assert result.returncode == 2
    assert complaint in result.stderr
    assert "rules.toml" in result.stderr
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_malformed_case_is_one_clear_line(tree: Path) -> None:
    (tree / "cases" / "area" / "refused" / "case.toml").write_text('description = "x"\nmachines = ["pc"]\n')
    result = run(tree)
    assert result.returncode == 2
    assert "area/refused/case.toml" in result.stderr
    assert "Traceback" not in result.stderr


def test_committed_rules_page_is_up_to_date(tmp_path: Path) -> None:
    output = tmp_path / "rules.md"
    result = run(ROOT, "--output", str(output))
    assert result.returncode in (0, 1), result.stderr
    committed = (ROOT / "docs" / "rules.md").read_text()
    assert output.read_text() == committed, "docs/rules.md is stale: run scripts/gen-rules-doc and commit it"
