import pytest
import torch

from repro.errors import ReproError, UsageError
from repro.models import MODELS, build_model, normalization
from repro.weights import file_name, locate

PAPER_TOP1_SPAN = (56.522, 83.42)


def test_nineteen_paper_models_span_the_papers_top1_range():
    paper = [s for s in MODELS.values() if s.in_paper]
    assert len(paper) == 19
    assert (min(s.top1 for s in paper), max(s.top1 for s in paper)) == PAPER_TOP1_SPAN


def test_torchvision_top1_equals_the_installed_weights_metadata():
    from torchvision.models import get_model_weights

    for spec in MODELS.values():
        if spec.library == "torchvision":
            meta = get_model_weights(spec.arch)[spec.tag].meta
            assert spec.top1 == meta["_metrics"]["ImageNet-1K"]["acc@1"], spec.name


def test_timm_tags_exist_and_native_sizes_match_their_configs():
    from timm.models import get_pretrained_cfg

    for spec in MODELS.values():
        if spec.library == "timm":
            cfg = get_pretrained_cfg(f"{spec.arch}.{spec.tag}")
            assert cfg is not None, spec.name
            assert cfg.input_size[-1] == spec.input_size, spec.name


def test_names_become_paths_by_one_rule():
    spec = MODELS["timm/deit_tiny_patch16_224.fb_in1k"]
    assert spec.name == str(spec.path) == "timm/deit_tiny_patch16_224.fb_in1k"
    with pytest.raises(UsageError, match="unknown model 'resnet50'; valid: torchvision/alexnet"):
        build_model("resnet50", 5)


@pytest.mark.parametrize("name", MODELS.names())
def test_every_model_builds_offline_with_a_new_head(name):
    spec = MODELS[name]
    size = max(spec.input_size // 2, 96) if spec.library == "timm" else 64
    model = build_model(name, 5, image_size=size).eval()
    with torch.inference_mode():
        assert model(torch.zeros(1, 3, size, size)).shape == (1, 5)
    mean, std = normalization(name)
    assert len(mean) == len(std) == 3


def _pretend_pretrained(name, tmp_path, size=None):
    """Save random 1000-class weights where `locate` looks, as a downloaded checkpoint would sit."""
    source = build_model(name, 1000, image_size=size)
    target = tmp_path / file_name(MODELS[name])
    if target.suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in source.state_dict().items()}, str(target))
    else:
        torch.save(source.state_dict(), target)
    return source


def test_torchvision_pretrained_loads_the_file_and_replaces_squeezenets_conv_head(tmp_path):
    name = "torchvision/squeezenet1_1.IMAGENET1K_V1"
    source = _pretend_pretrained(name, tmp_path)
    model = build_model(name, 5, pretrained=True, weights_dir=tmp_path)
    assert torch.equal(model.features[0].weight, source.features[0].weight)
    assert model.classifier[1].out_channels == 5
    assert model(torch.zeros(1, 3, 64, 64)).shape == (1, 5)


def test_timm_pretrained_loads_the_file_and_resamples_position_embeddings(tmp_path):
    name = "timm/deit_tiny_patch16_224.fb_in1k"
    source = _pretend_pretrained(name, tmp_path)
    model = build_model(name, 5, pretrained=True, image_size=32, weights_dir=tmp_path)
    assert torch.equal(model.blocks[0].attn.qkv.weight, source.blocks[0].attn.qkv.weight)
    assert model.pos_embed.shape[1] == 1 + (32 // 16) ** 2
    assert model(torch.zeros(1, 3, 32, 32)).shape == (1, 5)


def test_missing_weights_name_the_file_and_its_url(tmp_path):
    spec = MODELS["torchvision/resnet50.IMAGENET1K_V1"]
    with pytest.raises(ReproError) as error:
        locate(spec, tmp_path)
    message = str(error.value)
    assert str(tmp_path / "resnet50-0676ba61.pth") in message
    assert "https://download.pytorch.org/models/resnet50-0676ba61.pth" in message
