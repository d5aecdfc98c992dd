"""Backbones from local weights (offline), freezing and layer-wise LR decay."""

import pytest
import torch
from conftest import SHARED
from safetensors.torch import load_file
from torch import nn

from galaxytune.errors import ModelError
from galaxytune.models.backbone import create_classifier
from galaxytune.models.freezing import freeze_batchnorm, optimizer_groups, set_trainable


def _same_backbone(net, state):
    own = net.backbone.state_dict()
    shared = [k for k in state if k in own and own[k].shape == state[k].shape]
    return len(shared) > 50 and all(torch.equal(own[k], state[k]) for k in shared)


def test_local_safetensors_weights_load_and_get_a_new_head(weights_file):
    net = create_classifier("mobilenetv1_100", 3, weights=str(weights_file))
    assert _same_backbone(net, load_file(str(weights_file)))
    assert net.head.out_features == 3
    assert net(torch.zeros(2, 3, 32, 32, dtype=torch.uint8)).shape == (2, 3)


def test_plain_state_dict_file_loads(weights_file, tmp_path):
    state = load_file(str(weights_file))
    torch.save({"state_dict": state}, tmp_path / "w.pth")
    net = create_classifier("mobilenetv1_100", 4, weights=str(tmp_path / "w.pth"))
    assert _same_backbone(net, state)


def test_normalisation_defaults_to_the_weights_config_and_can_be_overridden(weights_file):
    assert create_classifier("mobilenetv1_100", 2, weights="none").mean.flatten().tolist() == [0.5] * 3
    net = create_classifier("resnet18", 2, weights="none", mean=[0.1, 0.2, 0.3], std=[1, 1, 1])
    assert net.mean.flatten().tolist() == pytest.approx([0.1, 0.2, 0.3])


def test_bad_model_name_and_missing_or_wrong_weights_are_clear(weights_file, tmp_path):
    with pytest.raises(ModelError, match="mobilenetv1_100"):
        create_classifier("mobilenetv1_10O", 2)
    with pytest.raises(ModelError, match="does not exist"):
        create_classifier("mobilenetv1_100", 2, weights=str(tmp_path / "nope.safetensors"))
    with pytest.raises(ModelError, match="Could not load pretrained weights for resnet18"):
        create_classifier("resnet18", 2, weights=str(weights_file))


def test_hub_weights_offline_fail_with_a_way_out(tmp_path, monkeypatch):
    from huggingface_hub import constants

    # An empty hub cache: weights cached on this machine must not make the test pass vacuously.
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    with pytest.raises(ModelError, match="--weights PATH"):
        create_classifier("mobilenetv1_100", 2, weights="hub")


@pytest.mark.skipif(not (SHARED / "weights").is_dir(), reason="../shared/weights not present on this machine")
@pytest.mark.parametrize("name, file", [
    ("mobilenetv1_100", "mobilenetv1_100.tf_quant_in1k.safetensors"),
    ("mobilenetv2_100", "mobilenetv2_100.tf_quant_in1k.safetensors"),
    ("tf_efficientnet_lite0", "tf_efficientnet_lite0.in1k.safetensors"),
])
def test_shared_imagenet_weights_load(name, file):
    path = SHARED / "weights" / file
    net = create_classifier(name, 5, weights=str(path), mean=[0.5] * 3, std=[0.5] * 3)
    assert _same_backbone(net, load_file(str(path)))


def test_top_blocks_freeze_the_bottom_and_decay_the_lr_downwards():
    net = create_classifier("mobilenetv1_100", 3, weights="none")
    total = sum(p.numel() for p in net.parameters())
    n_top = set_trainable(net, "top-blocks", 2)
    assert 0 < n_top < total / 2
    assert not net.backbone.conv_stem.weight.requires_grad and net.head.weight.requires_grad
    groups = optimizer_groups(net, lr=1e-3, weight_decay=0.05, layer_decay=0.5)
    lrs = sorted({g["lr"] for g in groups})
    assert lrs == pytest.approx([2.5e-4, 5e-4, 1e-3])  # three layers: two blocks and the head
    assert sum(p.numel() for g in groups for p in g["params"]) == n_top
    assert set_trainable(net, "full", 0) == total


def test_frozen_batchnorm_keeps_statistics_in_train_mode():
    net = create_classifier("mobilenetv1_100", 3, weights="none")
    set_trainable(net, "top-blocks", 1)
    bn = net.backbone.bn1
    net.train()
    freeze_batchnorm(net, "train")  # policy 'train' still freezes BN of frozen layers
    assert not bn.training
    last_bn = [m for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d)][-1]
    assert last_bn.training
    freeze_batchnorm(net, "frozen")
    before = last_bn.running_mean.clone()
    net(torch.rand(4, 3, 32, 32))
    assert torch.equal(before, last_bn.running_mean)


def test_corrupt_weights_and_bad_kwargs_are_model_errors(tmp_path):
    bad = tmp_path / "w.safetensors"
    bad.write_bytes(b"\x00" * 100)
    with pytest.raises(ModelError, match="w.safetensors"):
        create_classifier("mobilenetv1_100", 2, weights=str(bad))
    with pytest.raises(ModelError, match="pad_typ"):
        create_classifier("mobilenetv1_100", 2, weights="none", kwargs={"pad_typ": "same"})


@pytest.mark.parametrize("name", [
    "mobilenetv1_100", "mobilenetv2_100", "tf_efficientnet_lite0", "resnet18", "test_convnext", "test_vit",
])
@pytest.mark.parametrize("method", ["top-blocks", "bias-norm"])
def test_every_method_trains_what_it_says_on_each_architecture(name, method):
    """One optimiser step per architecture: only the chosen parameters move, the stem never."""
    torch.manual_seed(0)
    net = create_classifier(name, 3, weights="none")
    n_trainable = set_trainable(net, method, 2)
    groups = optimizer_groups(net, lr=1e-2, weight_decay=0.0, layer_decay=0.7)
    assert sum(p.numel() for g in groups for p in g["params"]) == n_trainable
    assert 0 < n_trainable < sum(p.numel() for p in net.parameters())
    nn.init.normal_(net.head.weight, std=0.1)  # a zero head passes no gradient down
    before = {n: p.detach().clone() for n, p in net.named_parameters()}
    optimizer = torch.optim.SGD(groups)
    size = 224 if name == "test_vit" else 64
    net(torch.rand(2, 3, size, size)).logsumexp(1).sum().backward()
    optimizer.step()
    moved = {n for n, p in net.named_parameters() if not torch.equal(p, before[n])}
    trainable = {n for n, p in net.named_parameters() if p.requires_grad}
    assert moved and moved <= trainable
    assert net.head.weight.requires_grad and not next(net.backbone.parameters()).requires_grad
