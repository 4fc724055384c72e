"""docs/fidelity.md, repro.fidelity and the resolved paper plan stay in step; the dry run marks every difference."""

import ast
import math
import os
import re
import subprocess

import pytest
from torch import nn

from conftest import BIN, ROOT
from repro import fidelity
from repro.config import load_params
from repro.fidelity import CODE, ELEMENTS, PENDING_KEYS, RETIRING_KEYS, check_against, marks, resolved_values

PAPER = ROOT / "profiles/paper.yaml"
SMOKE = ROOT / "profiles/smoke.yaml"
AUTHORS = ROOT.parent / ".mirror/mlfoundations+imagenet-applications-transfer/repo"


@pytest.fixture(scope="module")
def paper_values():
    return resolved_values(load_params(PAPER).finetune)


def test_the_committed_page_is_generated_from_the_elements():
    assert (ROOT / "docs/fidelity.md").read_text() == fidelity.render_markdown(), (
        "docs/fidelity.md is stale: python -m repro.fidelity > docs/fidelity.md")


def test_the_page_lists_every_element_with_its_key_and_status():
    rows = [line for line in (ROOT / "docs/fidelity.md").read_text().splitlines() if line.startswith("| ")][1:]
    parsed = [[c.strip() for c in re.split(r"(?<!\\)\|", row)[1:-1]] for row in rows]
    assert [(r[0], r[1].strip("`"), r[5]) for r in parsed] == [(e.name, e.key, e.status) for e in ELEMENTS]


def test_the_pages_paper_column_is_the_resolved_value(paper_values):
    rows = [line for line in (ROOT / "docs/fidelity.md").read_text().splitlines() if line.startswith("| ")][1:]
    stated = {c[1].strip("`"): c[4].strip("`") for c in
              ([x.strip() for x in re.split(r"(?<!\\)\|", row)[1:-1]] for row in rows)}
    for key, value in paper_values.items():
        assert stated[key] == fidelity._show(value), key


def test_the_table_states_the_resolved_paper_plan(paper_values):
    assert check_against(paper_values) == []
    # every finetune key of the paper profile is a row, and a row's key absent from the params is only tolerated
    # for the keys another change introduces or retires
    keys = {e.key for e in ELEMENTS if e.key != CODE}
    assert set(paper_values) <= keys
    assert keys - set(paper_values) <= PENDING_KEYS | RETIRING_KEYS


def _other(value):
    """A value of the same kind that differs from `value`."""
    if isinstance(value, bool):
        return not value
    if isinstance(value, (int, float)):
        return value + 1
    if isinstance(value, (list, tuple)):
        return tuple(value[:-1]) if len(value) > 1 else (*value, value[0])
    if value is None:
        return 512
    return value + "-changed"


@pytest.mark.parametrize("key", sorted(e.key for e in ELEMENTS if e.key != CODE))
def test_a_parameter_that_changes_without_the_table_fails(paper_values, key):
    values = dict(paper_values)
    if key not in values:  # a pending key: once it exists, its row is compared like every other
        values[key] = next(e.paper for e in ELEMENTS if e.key == key)
        assert check_against(values) == []
    values[key] = _other(values[key])
    problems = check_against(values)
    assert len(problems) == 1 and problems[0].startswith(f"{key}: the table says"), problems


def test_a_new_parameter_or_a_vanished_one_fails(paper_values):
    assert check_against({**paper_values, "finetune.mixup": 0.2}) == [
        "finetune.mixup: a paper-profile parameter with no row in repro.fidelity.ELEMENTS"]
    vanished = next(k for k in paper_values if k not in PENDING_KEYS | RETIRING_KEYS)
    assert check_against({k: v for k, v in paper_values.items() if k != vanished}) == [
        f"{vanished}: in repro.fidelity.ELEMENTS but not a parameter"]


def test_each_row_is_complete_and_its_status_follows_its_values():
    names = [e.name for e in ELEMENTS]
    assert len(set(names)) == len(names)
    for e in ELEMENTS:
        assert e.status in fidelity.STATUSES and e.authors_ref and e.authors and e.pinned_by, e.name
        assert e.status == "same" or e.why, f"{e.name}: a {e.status} says why"
        if e.key != CODE:
            assert (e.status == "same") == (fidelity._norm(e.paper) == fidelity._norm(e.reference_value)), e.name


def _test_exists(node: str) -> bool:
    path, *names = node.split("::")
    names = [re.sub(r"\[.*\]$", "", n) for n in names]
    tree = ast.parse((ROOT / path).read_text())
    scope = tree.body
    for name in names:
        found = [n for n in scope if isinstance(n, (ast.FunctionDef, ast.ClassDef)) and n.name == name]
        if not found:
            return False
        scope = found[0].body
    return True


def test_every_pinning_test_exists():
    missing = [t for e in ELEMENTS for t in e.pinned_by if not _test_exists(t)]
    assert missing == []
    assert not _test_exists("tests/test_train.py::test_that_does_not_exist")


@pytest.mark.skipif(not AUTHORS.is_dir(), reason="the authors' repository is not mirrored here")
def test_every_cited_line_exists_in_the_authors_code():
    def lines(path):
        shown = subprocess.run(["git", "-C", str(AUTHORS), "show", f"{fidelity.AUTHORS_COMMIT}:{path}"],
                               capture_output=True, text=True, check=True)
        return len(shown.stdout.splitlines())

    for e in ELEMENTS:
        folder = ""
        for part in e.authors_ref.split(";"):
            match = re.match(r"\s*((?:datasets/)?)([\w.]+\.py)(?::([\d, -]+))?", part)
            if not match:
                continue
            folder = match.group(1) or folder
            path = ("" if match.group(2) == "sample_train.py" else folder) + match.group(2)
            numbers = [int(n) for n in re.findall(r"\d+", match.group(3) or "")]
            assert max(numbers, default=0) <= lines(path), f"{e.name}: {path} has no line {max(numbers)}"


def test_the_paper_plan_marks_exactly_what_differs_from_the_authors_code(paper_values):
    rows = {r["element"]: r for r in marks(load_params(PAPER).finetune)}
    for e in ELEMENTS:
        if e.key in RETIRING_KEYS and e.key not in paper_values:
            assert e.name not in rows
            continue
        mark = rows[e.name]["mark"]
        if e.key != CODE and e.key not in paper_values:
            assert mark.startswith("≠ authors"), e.name  # a pending switch this build lacks is a difference
        elif e.status == "same":
            assert mark == "same", e.name
        else:
            assert mark.startswith("≠ authors" if e.status == "deviation" else "? unknown") and e.why in mark, e.name


def test_the_smoke_plan_marks_its_fast_settings():
    rows = {r["key"]: r["mark"] for r in marks(load_params(SMOKE).finetune)}
    for key in ("finetune.epochs", "finetune.batch_size", "finetune.lrs", "finetune.models", "finetune.datasets"):
        assert rows[key].startswith("≠ authors: the authors' code: "), key
    assert rows["finetune.optimizer"] == rows["finetune.adamw_wd_over_lr"] == "same"


def test_the_dry_run_prints_every_element_with_its_mark():
    env = {**os.environ, "COLUMNS": "1000"}
    done = subprocess.run([str(BIN / "repro"), "finetune", "--dry-run", "--params", str(PAPER)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    rows = marks(load_params(PAPER).finetune)
    marked = [r for r in rows if r["mark"] != "same"]
    assert f"{len(marked)} element(s) marked" in done.stdout
    lines = done.stdout.split("against the authors' code", 1)[1].splitlines()
    for r in rows:
        line = next(x for x in lines if x.startswith(f"│ {r['element']} "))
        assert line.rstrip(" │").endswith(r["mark"]), line


# --- point 7 of issue 13: a config that diverges after a good epoch ----------------------------------------------

def test_a_config_that_diverges_after_a_good_epoch_keeps_that_epoch():
    from test_train import PROTOCOL, tiny_model, toy_splits

    from repro.metrics import accuracy
    from repro.train import ConfigResult, best_config, train_config

    splits, targets = toy_splits()
    batches_per_epoch = math.ceil(len(splits["train"]) / PROTOCOL.batch_size)

    class LaterNan(nn.Module):
        """Learns normally for two epochs; from the first training batch of epoch 3 its logits are NaN."""

        def __init__(self):
            super().__init__()
            self.inner, self.calls = tiny_model(), 0

        def forward(self, x):
            if self.training:
                self.calls += 1
            out = self.inner(x)
            return out * float("nan") if self.training and self.calls > 2 * batches_per_epoch else out

    seen = []
    result = train_config(LaterNan, splits, targets, PROTOCOL, 0.05, 0.0, accuracy, select="val", report="test",
                          on_epoch=lambda e, r: seen.append(e))
    assert result.diverged and seen == [1, 2] and len(result.curve) == 2  # diverged in epoch 3, before its eval
    assert result.best_epoch in (1, 2) and result.select_value == max(r["select"] for r in result.curve) > 0.5
    assert result.report_value == result.curve[result.best_epoch - 1]["report"] and result.state_dict is not None
    summary = result.summary()
    assert summary["diverged"] and len(summary["curve"]) == 2 and summary["best_epoch"] == result.best_epoch
    worse = ConfigResult(lr=1, wd=0, curve=[{"select": 0.5, "report": 0.5}], best_epoch=1)
    assert best_config([worse, result]) == 1  # the diverged config's pre-divergence epoch wins the grid
    from repro.plan import resolve_plan

    selection = resolve_plan(load_params(SMOKE))["protocol"]["selection"]
    assert "its best epoch before that stays selectable" in selection  # the dry run says what train.py does
