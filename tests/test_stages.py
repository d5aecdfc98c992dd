"""The recipe's stages: one signature, no stage changing the network it is given, the finetune
methods as one registry, and one device policy read from the trainer settings."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from conftest import FAST

from galaxytune.config import FINETUNE_METHODS, load_config, settings
from galaxytune.data.prepare import prepare
from galaxytune.models.backbone import create_classifier
from galaxytune.models.freezing import set_trainable
from galaxytune.models.methods import METHODS, methods_table
from galaxytune.run_folder import RunFolder
from galaxytune.training.devices import device_ids, devices_of, inference_device
from galaxytune.training.pipeline import run_stages
from galaxytune.training.stages import STAGES, RunContext, _trainable_copy

README = Path(__file__).resolve().parents[1] / "README.md"


def test_the_method_registry_is_what_the_config_and_the_readme_offer():
    assert FINETUNE_METHODS == tuple(METHODS)
    method = next(s for s in settings() if s.key == "finetune.method")
    assert method.meta["choices"] == tuple(METHODS) and all(f"'{name}'" in method.help for name in METHODS)
    assert methods_table() in README.read_text()


def test_a_method_without_a_rule_is_an_error_not_top_blocks():
    net = create_classifier("mobilenetv1_100", 3, weights="none")
    for name in ("head", "lora", "no-such-method"):
        with pytest.raises(ValueError, match=name):
            set_trainable(net, name, 2)


def test_finetune_disabled_and_method_head_are_one_state():
    on = load_config()
    off = load_config(overrides=["finetune.enabled=false"])
    head = load_config(overrides=["finetune.method=head"])
    assert on.finetune.runs and not off.finetune.runs and not head.finetune.runs
    assert [s.name for s in STAGES if s.enabled(off)] == [s.name for s in STAGES if s.enabled(head)] \
        == ["transfer", "tta", "decision"]
    assert [s.name for s in STAGES if s.enabled(on)] == ["transfer", "finetune", "tta", "decision"]


def test_device_ids_read_trainer_devices_as_lightning_does():
    assert device_ids("auto", 4) == [0, 1, 2, 3] and device_ids(-1, 2) == [0, 1]
    assert device_ids(2, 4) == [0, 1] and device_ids("2", 4) == [0, 1]
    assert device_ids([2, 3], 4) == [2, 3] and device_ids("1,3", 4) == [1, 3]


@pytest.mark.parametrize("accelerator, devices, rank, expected", [
    ("auto", "auto", 0, "cuda:0"),
    ("gpu", [2, 3], 1, "cuda:3"),  # each DDP process on its own GPU, not all on GPU 0
    ("cuda", 2, 1, "cuda:1"),
    ("cpu", "auto", 0, "cpu"),
])
def test_the_inference_device_follows_the_trainer_settings(monkeypatch, accelerator, devices, rank, expected):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # a stand-in for a machine with 4 GPUs
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)
    monkeypatch.setenv("LOCAL_RANK", str(rank))
    cfg = load_config(overrides=[f"trainer.accelerator={accelerator}", f"trainer.devices={devices}"])
    assert inference_device(cfg.trainer) == torch.device(expected)


def test_no_gpu_means_the_cpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    assert inference_device(load_config(overrides=["trainer.accelerator=gpu"]).trainer) == torch.device("cpu")


def test_preparing_a_lora_finetune_leaves_the_callers_network_alone():
    cfg = load_config(overrides=["finetune.method=lora", "finetune.lora_rank=2"])
    net = create_classifier("mobilenetv1_100", 3, weights="none")
    before = {k: v.clone() for k, v in net.state_dict().items()}
    tuned, trained, groups = _trainable_copy(net, cfg)
    assert tuned is not net and trained is not net and groups[0]["params"]
    assert net.state_dict().keys() == before.keys() and all(p.requires_grad for p in net.parameters())
    assert not any("lora" in n for n, _ in net.named_modules())


def test_stages_return_new_networks_on_one_device_and_leave_the_callers_alone(tiny_split, tmp_path, weights_file):
    cfg = load_config(overrides=[f"data.path={tiny_split}", f"model.weights={weights_file}", *FAST,
                                 "decision.tta=true"])
    data = prepare(cfg.data, None)
    net = create_classifier("mobilenetv1_100", 3, str(weights_file))
    before = {k: v.clone() for k, v in net.state_dict().items()}
    run = RunContext(cfg, RunFolder(tmp_path / "run"), False, inference_device(cfg.trainer))
    final, stages = run_stages(run, net, data)
    assert [s.name for s in stages] == ["transfer", "finetune", "tta", "decision"]
    assert all(torch.equal(v, before[k]) for k, v in net.state_dict().items())  # the caller's net is untouched
    assert devices_of(final) == {run.device}  # head and backbone together after the fits
    assert final is not net and all(s.val_logits.shape == (18, 3) and s.test_logits.shape == (18, 3)
                                    for s in stages)
