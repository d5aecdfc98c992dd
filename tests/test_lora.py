"""LoRA adapters: targets chosen by rule across architectures, merging, and a LoRA run."""

import csv
import json

import pytest
import torch
from conftest import FAST
from torch import nn

from galaxytune.cli import main
from galaxytune.inference.predict import Predictor
from galaxytune.models.backbone import create_classifier
from galaxytune.models.freezing import set_trainable
from galaxytune.models.lora import add_lora, apply_adapter, lora_targets, merge


@pytest.mark.parametrize("name", [
    "mobilenetv1_100", "mobilenetv2_100", "tf_efficientnet_lite0", "resnet18", "test_convnext", "test_vit",
])
def test_targets_are_pointwise_convs_and_linears_never_grouped_convs_or_the_head(name):
    net = create_classifier(name, 4, weights="none")
    targets = lora_targets(net)
    modules = dict(net.named_modules())
    assert targets
    for t in targets:
        m = modules[t]
        assert isinstance(m, nn.Linear) or (m.kernel_size == (1, 1) and m.groups == 1)
        assert m is not net.head
    depthwise = [n for n, m in modules.items() if isinstance(m, nn.Conv2d) and m.groups > 1]
    assert not set(depthwise) & set(targets)
    wrapped = add_lora(net, rank=4, alpha=8, dropout=0.0)
    size = 224 if name == "test_vit" else 64
    assert wrapped(torch.rand(2, 3, size, size)).shape == (2, 4)
    trainable = sum(p.numel() for p in wrapped.parameters() if p.requires_grad)
    assert trainable < 0.25 * sum(p.numel() for p in wrapped.parameters())


def test_merged_model_predicts_as_the_adapted_one():
    torch.manual_seed(0)
    net = create_classifier("mobilenetv1_100", 3, weights="none")
    wrapped = add_lora(net, rank=4, alpha=8, dropout=0.0)
    for name, p in wrapped.named_parameters():
        if "lora_B" in name or "modules_to_save" in name:
            nn.init.normal_(p, std=0.05)  # as after training: the adapters change the function
    wrapped.eval()
    x = torch.rand(4, 3, 48, 48)
    base_out = wrapped.get_base_model()(x)
    with wrapped.disable_adapter():
        assert not torch.allclose(wrapped(x), base_out, atol=1e-4)  # the adapters do something
    merged = merge(wrapped).eval()
    assert not any("lora" in n for n, _ in merged.named_parameters())
    assert torch.allclose(merged(x), base_out, atol=1e-4)


def test_bias_norm_trains_only_biases_norms_and_head():
    net = create_classifier("mobilenetv1_100", 3, weights="none")
    set_trainable(net, "bias-norm", 0)
    names = [n for n, p in net.backbone.named_parameters() if p.requires_grad]
    assert "classifier.weight" in names and "bn1.weight" in names
    assert not any(n.endswith("conv.weight") or "conv_dw.weight" in n or "conv_pw.weight" in n for n in names)


def test_lora_run_saves_the_adapter_and_a_merged_model(tmp_path, tiny_split, weights_file):
    run = tmp_path / "run"
    args = ["train", "--data", str(tiny_split), "--out", str(run), "--weights", str(weights_file), *FAST,
            "finetune.method=lora", "finetune.lora_rank=4", "finetune.guard=false"]
    assert main(args) == 0
    adapter = run / "models" / "lora_adapter"
    assert (adapter / "adapter_config.json").is_file() and (adapter / "adapter_model.safetensors").is_file()
    full_size = (run / "models" / "model.safetensors").stat().st_size
    assert (adapter / "adapter_model.safetensors").stat().st_size < full_size / 5
    assert [r["stage"] for r in csv.DictReader(open(run / "stage_table.csv"))] == ["transfer", "finetune", "decision"]
    finetune = json.loads((run / "stages.json").read_text())[1]
    on_disk = sum(f.stat().st_size for f in adapter.iterdir())
    assert finetune["adapter_bytes"] == on_disk and finetune["trainable_params"] > 0
    # The adapter alone, merged into the base weights the run started from, is the run's model.
    rebuilt = apply_adapter(create_classifier("mobilenetv1_100", 3, weights=str(weights_file)), adapter).eval()
    saved = Predictor.load(run).net
    x = torch.rand(4, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(rebuilt(x), saved(x), atol=1e-5)
        assert not torch.allclose(create_classifier("mobilenetv1_100", 3, weights=str(weights_file)).eval()(x),
                                  saved(x), atol=1e-5)  # the adapter and head do change the model
    assert main(["predict", "--model", str(run), str(tiny_split / "test"), "--out", str(tmp_path / "p.csv")]) == 0


def test_merge_returns_the_wrapped_network_itself():
    net = create_classifier("mobilenetv1_100", 3, weights="none")
    assert merge(add_lora(net, rank=2, alpha=4, dropout=0.0)) is net  # so the finetune stage merges a copy


def test_a_lora_stage_the_guard_rejects_leaves_no_adapter_behind(tmp_path, tiny_split, weights_file):
    run = tmp_path / "run"
    # A vanishing learning rate leaves the adapted model as the transfer stage's: not better on val.
    assert main(["train", "--data", str(tiny_split), "--out", str(run), "--weights", str(weights_file), *FAST,
                 "finetune.method=lora", "finetune.lr=1e-12"]) == 0
    finetune = json.loads((run / "stages.json").read_text())[1]
    assert finetune["kept_incoming"] and finetune["adapter_bytes"] is None
    assert not (run / "models" / "lora_adapter").exists() and (run / "models" / "model.safetensors").is_file()
