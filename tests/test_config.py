import copy

import pytest
import yaml

from repro.config import load_params, parse_params
from repro.errors import ReproError

from conftest import ROOT


def smoke() -> dict:
    return yaml.safe_load((ROOT / "profiles/smoke.yaml").read_text())


def test_params_yaml_is_the_smoke_profile():
    assert (ROOT / "params.yaml").read_text() == (ROOT / "profiles/smoke.yaml").read_text()


def test_both_profiles_parse():
    assert load_params(ROOT / "profiles/smoke.yaml").profile == "smoke"
    paper = load_params(ROOT / "profiles/paper.yaml")
    assert paper.profile == "paper"
    assert len(paper.finetune.models) == 19 and len(paper.prepare.datasets) == 6
    assert len(paper.finetune.lrs) * len(paper.finetune.wds) == 20 and paper.finetune.epochs == 30


def test_yaml_floats_without_a_dot_are_accepted():
    data = smoke()
    data["finetune"]["lrs"] = ["1e-3"]  # YAML 1.1 reads 1e-3 as a string
    assert parse_params(data).finetune.lrs == (0.001,)


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda d: d.pop("finetune"), "params.yaml: finetune: missing section"),
        (lambda d: d["finetune"].pop("epochs"), "params.yaml: finetune.epochs: missing key"),
        (lambda d: d["finetune"].update(epochs="ten"), "finetune.epochs: Input should be a valid integer (got 'ten')"),
        (lambda d: d["finetune"].update(pretrained="yes"), "finetune.pretrained: Input should be a valid boolean"),
        (lambda d: d["finetune"].update(lrs=[0.0]), "finetune.lrs.0: Input should be greater than 0"),
        (lambda d: d["analyze"].update(ci_level=1.5), "analyze.ci_level: Input should be less than 1"),
        (lambda d: d["finetune"].update(models=["resnet50"]), "finetune.models: unknown model 'resnet50'; valid: "),
        (lambda d: d["prepare"].update(datasets=["mnist"]), "prepare.datasets: unknown dataset 'mnist'; valid: "),
        (lambda d: d["finetune"].update(datasets=["aptos"]), "'aptos' is not in prepare.datasets"),
        (lambda d: d.update(extra={}), "extra: unknown key"),
        (lambda d: d.update(profile="full"), "profile: Input should be 'smoke' or 'paper'"),
    ],
)
def test_bad_params_give_one_clear_line(mutate, message):
    data = copy.deepcopy(smoke())
    mutate(data)
    with pytest.raises(ReproError) as error:
        parse_params(data)
    assert message in str(error.value)
    assert "\n" not in str(error.value)


def test_missing_and_invalid_files(tmp_path):
    with pytest.raises(ReproError, match="not found"):
        load_params(tmp_path / "params.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("finetune: [unclosed\n")
    with pytest.raises(ReproError, match="not valid YAML"):
        load_params(bad)
    bad.write_text("- a list\n")
    with pytest.raises(ReproError, match="expected a mapping"):
        load_params(bad)
