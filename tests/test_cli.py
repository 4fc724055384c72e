"""The CLI as a user meets it: real `repro` processes, exit codes, one-line errors, nothing half-written."""

import json
import sys

import pytest

from conftest import BIN, ROOT, run

REPRO = str(BIN / "repro")
VERBS = [[], ["check"], ["data"], ["data", "prepare"], ["data", "verify"], ["models"], ["models", "list"],
         ["models", "fetch"], ["models", "verify"], ["finetune"], ["collect"],
         ["analyze"], ["figures"], ["verify"], ["report"], ["profile"], ["profile", "use"]]


def test_help_never_imports_torch():
    code = ("import sys\nfrom repro.cli import app\nfor verb in %r:\n"
            "    try:\n        app(verb + ['--help'])\n    except SystemExit:\n        pass\n"
            "print(sorted(m for m in ('torch', 'pandas', 'matplotlib', 'timm') if m in sys.modules))") % VERBS
    done = run([sys.executable, "-c", code], ROOT)
    assert done.stdout.strip().splitlines()[-1] == "[]"


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["finetune", "--model", "resnet50", "--dataset", "digits"], 2, "error: unknown model 'resnet50'; valid: "),
        (["finetune", "--model", "timm/deit_tiny_patch16_224.fb_in1k", "--dataset", "mnist"], 2,
         "error: unknown dataset 'mnist'; valid: cct20, aptos, hpa, melanoma, cassava, eurosat, digits"),
        (["data", "prepare", "mnist"], 2, "error: unknown dataset 'mnist'"),
        (["profile", "use", "full"], 2, "error: unknown profile 'full'; valid: smoke, paper"),
        (["data", "prepare", "digits", "--raw", "nowhere"], 1, "missing raw directory"),
        (["collect", "--params", "nowhere.yaml"], 1, "error: nowhere.yaml: not found"),
    ],
)
def test_bad_input_gives_one_line_and_an_exit_code(shared_checkout, args, code, message):
    checkout = shared_checkout
    before = sorted(p.relative_to(checkout) for p in checkout.rglob("*") if ".git" not in p.parts)
    done = run([REPRO, *args], checkout, check=False)
    assert done.returncode == code
    assert message in done.stderr and len(done.stderr.strip().splitlines()) == 1, done.stderr
    after = sorted(p.relative_to(checkout) for p in checkout.rglob("*") if ".git" not in p.parts)
    assert after == before  # nothing written


def test_params_with_a_missing_section_or_wrong_type(checkout):
    params = (checkout / "params.yaml").read_text()
    (checkout / "params.yaml").write_text(params.replace("analyze:", "analyse:"))
    done = run([REPRO, "analyze"], checkout, check=False)
    assert done.returncode == 1
    assert done.stderr.strip() == "error: params.yaml: analyze: missing section; analyse: unknown key"
    (checkout / "params.yaml").write_text(params.replace("epochs: 3", "epochs: three"))
    done = run([REPRO, "check"], checkout, check=False)
    assert done.returncode == 1 and "finetune.epochs: Input should be a valid integer (got 'three')" in done.stderr
    assert not (checkout / "results/check.json").exists()


def test_paper_profile_stops_before_any_work_naming_what_is_missing(checkout, tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))  # no weights cached there
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    run([REPRO, "profile", "use", "paper"], checkout)
    assert "profile: paper" in (checkout / "params.yaml").read_text()
    done = run([str(BIN / "dvc"), "repro"], checkout, check=False)
    assert done.returncode != 0
    text = done.stdout + done.stderr
    assert "the 'paper' study cannot start: 25 input(s) missing" in text
    assert "dataset aptos: data/raw/aptos missing; accept the rules at " \
           "https://www.kaggle.com/competitions/aptos2019-blindness-detection/rules" in text
    assert "pretrained weights for timm/convnext_tiny.fb_in1k not found" in text
    assert "Running stage 'prepare" not in text and "Traceback" not in text
    assert not list(checkout.glob("data/prepared/*/*")) and not list(checkout.glob("results/runs/**/run.json"))
    run([REPRO, "profile", "use", "smoke"], checkout)
    assert (checkout / "params.yaml").read_text() == (ROOT / "profiles/smoke.yaml").read_text()


def test_models_list_formats():
    # 19 paper models, 7 added in 2023, SqueezeNet's linear-head variant and one tiny test entry
    rows = json.loads(run([REPRO, "models", "list", "--format", "json"], ROOT).stdout)
    assert len(rows) == 33 and sum(r["in_paper"] for r in rows) == 19  # + 4 embedded, 1 random-init reference
    identity = {"name", "top1", "top1_source", "input_size", "tag", "weights", "url", "hf_hub_id", "num_params",
                "sha256", "revision"}
    assert all(identity <= set(r) for r in rows)
    csv_lines = run([REPRO, "models", "list", "--format", "csv"], ROOT).stdout.splitlines()
    assert csv_lines[0].startswith("name,library,arch,tag") and len(csv_lines) == 34
    table = run([REPRO, "models", "list"], ROOT).stdout
    assert "33 models" in table and "ConvNeXt-Tiny" in table and "CAFormer-B36" in table


def test_check_and_finetune_refuse_pretrained_weights_that_differ_from_their_pin(checkout, tmp_path):
    """The pipeline's own path (repro check, repro finetune) verifies weights against weights.lock.json."""
    import hashlib

    import torch
    import yaml

    from repro.models import MODELS, build_model
    from repro.weights import file_name

    name = "torchvision/squeezenet1_1.IMAGENET1K_V1"
    weights = tmp_path / "weights"
    weights.mkdir()
    path = weights / file_name(MODELS[name])
    torch.save(build_model(name, 1000).state_dict(), path)
    lock = json.loads((checkout / "weights.lock.json").read_text())
    lock["weights"][name].update(sha256=hashlib.sha256(path.read_bytes()).hexdigest(), size=path.stat().st_size)
    (checkout / "weights.lock.json").write_text(json.dumps(lock))
    params = yaml.safe_load((checkout / "params.yaml").read_text())
    params["finetune"].update(models=[name], pretrained=True, weights_dir=str(weights), epochs=1, lrs=[0.01], wds=[0.0])
    (checkout / "params.yaml").write_text(yaml.safe_dump(params))
    run([REPRO, "check"], checkout)
    run([REPRO, "data", "prepare", "digits"], checkout)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF  # same size, one byte differs
    path.write_bytes(bytes(data))
    for args in (["check"], ["finetune", "--model", name, "--dataset", "digits"]):
        done = run([REPRO, *args], checkout, check=False)
        assert done.returncode == 1 and "does not match the lock" in done.stderr, done.stderr
    assert not list(checkout.glob("results/runs/**/run.json"))
