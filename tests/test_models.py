import pytest
import torch

from repro.errors import ReproError, UsageError
from repro.models import LATER, MODELS, TINY, build_model, normalization
from repro.weights import file_name, locate

PAPER_TOP1_SPAN = (56.522, 83.42)
LATER_MODELS = {"timm/caformer_b36.sail_in1k", "timm/swin_base_patch4_window7_224.ms_in1k",
                "timm/mixer_b16_224.goog_in21k_ft_in1k", "timm/tinynet_e.in1k", "timm/tinynet_d.in1k",
                "timm/dla46_c.in1k", "timm/dla46x_c.in1k"}


def test_nineteen_paper_models_span_the_papers_top1_range():
    paper = [s for s in MODELS.values() if s.in_paper]
    assert len(paper) == 19
    assert (min(s.top1 for s in paper), max(s.top1 for s in paper)) == PAPER_TOP1_SPAN


def test_the_seven_later_models_the_linear_head_variant_and_a_tiny_entry_are_registered():
    assert {s.name for s in MODELS.values() if s.origin == LATER} == LATER_MODELS
    assert not any(MODELS[name].in_paper for name in LATER_MODELS)
    assert all("huggingface/pytorch-image-models@" in MODELS[name].top1_source for name in LATER_MODELS)
    variant = MODELS["torchvision/squeezenet1_1-linear.IMAGENET1K_V1"]
    assert variant.weights_key == "torchvision/squeezenet1_1.IMAGENET1K_V1" and not variant.in_paper
    assert [s.name for s in MODELS.values() if s.origin == TINY] == ["timm/test_efficientnet.r160_in1k"]


def test_torchvision_identity_and_top1_equal_the_installed_weights_metadata():
    from torchvision.models import get_model_weights

    for spec in MODELS.values():
        if spec.library == "torchvision" and spec.has_weights:  # the random-init reference has none
            weights = get_model_weights(spec.arch)[spec.tag]
            assert spec.top1 == weights.meta["_metrics"]["ImageNet-1K"]["acc@1"], spec.name
            assert spec.weights == f"{type(weights).__name__}.{weights.name}", spec.name
            assert spec.url == weights.url, spec.name
            assert spec.num_params == weights.meta["num_params"], spec.name


def test_timm_tags_exist_and_native_sizes_and_hub_repos_match_their_configs():
    from timm.models import get_pretrained_cfg

    for spec in MODELS.values():
        if spec.library == "timm" and spec.wheel is None:
            cfg = get_pretrained_cfg(spec.weights)
            assert cfg is not None, spec.name
            assert cfg.input_size[-1] == spec.input_size, spec.name
            assert cfg.hf_hub_id == spec.hf_hub_id == f"timm/{spec.arch}.{spec.tag}", spec.name
        elif spec.library == "timm":  # weights from a wheel: timm's config of the same TF weights is the reference
            cfg = get_pretrained_cfg(spec.preprocessing.partition(":")[2])
            assert cfg.input_size[-1] == spec.input_size and spec.hf_hub_id is None, spec.name


@pytest.mark.parametrize("name", MODELS.names())
def test_parameter_counts_match_the_built_model(name):
    with torch.device("meta"):  # shapes only: no memory, no init, so the 100M-parameter models cost nothing
        model = build_model(name, 1000)
    assert sum(p.numel() for p in model.parameters()) == MODELS[name].num_params


def test_names_become_paths_by_one_rule():
    spec = MODELS["timm/deit_tiny_patch16_224.fb_in1k"]
    assert spec.name == str(spec.path) == "timm/deit_tiny_patch16_224.fb_in1k"
    variant = MODELS["torchvision/squeezenet1_1-linear.IMAGENET1K_V1"]
    assert str(variant.path) == "torchvision/squeezenet1_1-linear.IMAGENET1K_V1"
    with pytest.raises(UsageError, match="unknown model 'resnet50'; valid: torchvision/alexnet"):
        build_model("resnet50", 5)


@pytest.mark.parametrize("name", MODELS.names())
def test_every_model_builds_offline_with_a_new_head_at_its_native_size(name):
    spec = MODELS[name]
    size = spec.input_size
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


def test_the_linear_head_variant_loads_the_same_file_and_ends_in_a_linear_layer(tmp_path):
    source = _pretend_pretrained("torchvision/squeezenet1_1.IMAGENET1K_V1", tmp_path)
    model = build_model("torchvision/squeezenet1_1-linear.IMAGENET1K_V1", 5, pretrained=True, weights_dir=tmp_path)
    assert torch.equal(model.features[0].weight, source.features[0].weight)
    head = model.classifier[-1]
    assert isinstance(head, torch.nn.Linear) and (head.in_features, head.out_features) == (512, 5)
    assert model(torch.zeros(2, 3, 64, 64)).shape == (2, 5)


def test_timm_pretrained_loads_the_file_and_resamples_position_embeddings(tmp_path):
    name = "timm/deit_tiny_patch16_224.fb_in1k"
    source = _pretend_pretrained(name, tmp_path)
    model = build_model(name, 5, pretrained=True, image_size=32, weights_dir=tmp_path)
    assert torch.equal(model.blocks[0].attn.qkv.weight, source.blocks[0].attn.qkv.weight)
    assert model.pos_embed.shape[1] == 1 + (32 // 16) ** 2
    assert model(torch.zeros(1, 3, 32, 32)).shape == (1, 5)


def test_missing_weights_name_the_file_its_url_and_the_fetch_command(tmp_path):
    spec = MODELS["torchvision/resnet50.IMAGENET1K_V1"]
    with pytest.raises(ReproError) as error:
        locate(spec, tmp_path)
    message = str(error.value)
    assert str(tmp_path / "resnet50-0676ba61.pth") in message
    assert "https://download.pytorch.org/models/resnet50-0676ba61.pth" in message
    assert f"`repro models fetch {spec.name} --weights-dir {tmp_path}`" in message
    assert len(message.splitlines()) == 1
