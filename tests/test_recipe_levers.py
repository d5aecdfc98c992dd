"""The recipe's levers: every Galaxy Zoo answer as extra supervision, sky augmentation (turns, zoom,
shift, blur, noise), the input stretch, progressive resizing, mixup and CutMix, the out-of-bag
check of the decision rule, TTA chosen on validation, split folders, the disk cache of decoded
images and features, and the learning-rate sweep."""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest
import torch
from conftest import COLOURS, FAST, draw, write_folder
from PIL import Image

import galaxytune
from galaxytune.cli import main
from galaxytune.config import FinetuneConfig, load_config
from galaxytune.data.formats import find_samples
from galaxytune.data.prepare import prepare
from galaxytune.data.questions import answer_slices, find_questions
from galaxytune.data.transforms import random_affine, random_blur, random_brightness, random_noise
from galaxytune.decision import check_offsets, fit_decision_rule
from galaxytune.errors import ConfigError, DataError
from galaxytune.evaluation.metrics import score
from galaxytune.inference.onnx import export_onnx
from galaxytune.inference.predict import run_batches
from galaxytune.inference.saved import load_model
from galaxytune.models.backbone import create_classifier, drop_path_is_idle, stretch_pixels
from galaxytune.training.losses import dirichlet_multinomial_nll, question_cross_entropy
from galaxytune.training.pipeline import Features, class_weights

GZ2_COUNTS = ["t01_smooth_or_features_a01_smooth_count", "t01_smooth_or_features_a02_features_or_disk_count",
              "t01_smooth_or_features_a03_star_or_artifact_count", "t02_edgeon_a04_yes_count",
              "t02_edgeon_a05_no_count"]


def test_questions_are_found_in_gz2_and_decals_headers():
    gz2 = find_questions(["filename", *GZ2_COUNTS, "t01_smooth_or_features_a01_smooth_fraction", "total_count"])
    assert [(q.name, q.answers) for q in gz2] == [
        ("t01_smooth_or_features", ("a01_smooth", "a02_features_or_disk", "a03_star_or_artifact")),
        ("t02_edgeon", ("a04_yes", "a05_no"))]
    assert answer_slices(gz2) == [(0, 3), (3, 5)]
    decals = find_questions(["iauname", "disk-edge-on_total-votes", "disk-edge-on_yes", "disk-edge-on_yes_fraction",
                             "disk-edge-on_no", "disk-edge-on_no_fraction", "disk-edge-on_no_debiased"])
    assert [(q.name, q.columns) for q in decals] == [("disk-edge-on", ("disk-edge-on_yes", "disk-edge-on_no"))]
    assert find_questions(["filename", "label", "f_red"]) == []


def test_dirichlet_multinomial_prefers_the_votes_and_ignores_unasked_questions():
    slices = [(0, 2), (2, 4)]
    counts = torch.tensor([[30.0, 10.0, 0.0, 0.0]])  # the second question was never asked
    right = torch.tensor([[3.0, -1.0, 5.0, -5.0]])
    wrong = torch.tensor([[-1.0, 3.0, -5.0, 5.0]])
    assert dirichlet_multinomial_nll(right, counts, slices) < dirichlet_multinomial_nll(wrong, counts, slices)
    # Whatever it predicts for the unasked question costs nothing.
    other = right.clone()
    other[0, 2:] = torch.tensor([-5.0, 5.0])
    for loss in (dirichlet_multinomial_nll, question_cross_entropy):
        assert loss(other, counts, slices).item() == pytest.approx(loss(right, counts, slices).item())
    # One answer, one vote, flat prediction: the likelihood is 1/2, per vote.
    flat = torch.zeros(1, 2)
    one_vote = dirichlet_multinomial_nll(flat, torch.tensor([[1.0, 0.0]]), [(0, 2)]).item()
    assert one_vote == pytest.approx(math.log(2), rel=1e-5)


def _gz2_table(root, n_per_class: int = 12):
    """A GZ2-style table: a derived class and the answer counts of two questions."""
    rng = np.random.default_rng(0)
    (root / "img").mkdir(parents=True)
    rows = []
    for label, votes in (("red", (30, 5, 1, 0, 0)), ("green", (5, 30, 1, 25, 5)), ("blue", (5, 30, 1, 5, 25))):
        for i in range(n_per_class):
            name = f"img/{label}_{i}.png"
            Image.fromarray(draw(label, rng)).save(root / name)
            rows.append({"filename": name, "derived_class": label, **dict(zip(GZ2_COUNTS, votes))})
    with open(root / "labels.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return root / "labels.csv"


def test_answer_counts_travel_with_the_samples_and_train_a_question_head(tmp_path, weights_file, capsys):
    table = _gz2_table(tmp_path / "data")
    cfg = load_config(overrides=[f"data.path={table}", "data.label_column=derived_class", "data.image_size=32"])
    found = find_samples(cfg.data)
    assert [q.name for q in found.questions] == ["t01_smooth_or_features", "t02_edgeon"]
    data = prepare(cfg.data, None)
    _, (target, counts) = data.sets["train"][0]
    assert target.dtype == torch.long and counts.shape == (5,) and counts.sum() > 0
    off = find_samples(load_config(overrides=[f"data.path={table}", "data.label_column=derived_class",
                                              "data.labels.questions=off"]).data)
    assert off.questions == [] and all(s.counts is None for s in off["train"])

    run = tmp_path / "run"
    assert main(["train", "--data", str(table), "--out", str(run), "--weights", str(weights_file), *FAST,
                 "data.label_column=derived_class"]) == 0
    assert "question head learns the votes on 2 Galaxy Zoo questions" in capsys.readouterr().out
    logged = [r for r in csv.DictReader(open(run / "logs" / "finetune" / "metrics.csv")) if r["train_question_loss"]]
    assert logged and all(float(r["train_question_loss"]) > 0 for r in logged)
    # The question head shapes the features only: the saved model is a plain classifier.
    net, _ = load_model(run)
    assert net.question_head is None


def test_affine_augmentation_is_the_identity_when_off_and_keeps_a_centred_blob_under_turns():
    x = torch.zeros(4, 3, 32, 32, dtype=torch.uint8)
    x[:, :, 12:20, 12:20] = 200
    same = random_affine(x, any_angle=False, zoom=0.0, shift=0.0)
    assert torch.allclose(same, x.float() / 255, atol=1e-6)
    turned = random_affine(x, any_angle=True, zoom=0.1, shift=0.0, generator=torch.Generator().manual_seed(0))
    assert turned.shape == (4, 3, 32, 32) and 0 <= turned.min() and turned.max() <= 1
    # A turn moves the square's corners but not its centre.
    assert torch.all(turned[:, :, 15:17, 15:17] > 0.7)
    assert not torch.allclose(turned, same)


def test_blur_spreads_a_point_source_keeps_its_flux_and_is_the_identity_at_zero():
    x = torch.zeros(8, 3, 21, 21)
    x[:, :, 10, 10] = 1.0
    assert torch.allclose(random_blur(x, 0.0), x)
    blurred = random_blur(x, 2.0, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(blurred.sum((2, 3)), x.sum((2, 3)), atol=1e-5)  # the flux stays
    peaks = blurred[:, 0, 10, 10]
    assert peaks.max() < 1.0 and peaks.unique().numel() == 8  # each image its own seeing
    # Edges are reflected: a flat sky stays flat, with no dark frame.
    flat = random_blur(torch.full((2, 3, 16, 16), 0.4), 2.0)
    assert torch.allclose(flat, torch.full_like(flat, 0.4), atol=1e-6)


def test_noise_has_each_images_own_level_and_keeps_greyscale_grey():
    grey = torch.full((64, 3, 16, 16), 128, dtype=torch.uint8)
    assert torch.allclose(random_noise(grey, 0.0), grey.float() / 255)
    noisy = random_noise(grey, 0.1, generator=torch.Generator().manual_seed(0))
    assert torch.equal(noisy[:, 0], noisy[:, 1]) and torch.equal(noisy[:, 1], noisy[:, 2])
    levels = (noisy - 128 / 255).std((1, 2, 3))
    assert levels.max() < 0.13 and levels.min() < 0.02 and levels.max() > 0.08
    colour = torch.rand(4, 3, 16, 16)
    colour[:, 0] += 0.01  # channels differ: each band gets its own noise
    noisy = random_noise(colour, 0.1, generator=torch.Generator().manual_seed(1))
    assert 0 <= noisy.min() and noisy.max() <= 1
    assert not torch.allclose(noisy[:, 1] - colour[:, 1], noisy[:, 2] - colour[:, 2])


def test_brightening_lifts_faint_pixels_saturates_bright_ones_and_never_darkens():
    x = torch.zeros(64, 1, 8, 8)
    x[:, :, 0, 0], x[:, :, 4, 4] = 0.1, 0.8  # a faint lobe and a bright core
    assert torch.allclose(random_brightness(x, 0.0), x)
    bright = random_brightness(x, 1.0, generator=torch.Generator().manual_seed(0))
    gains = bright[:, 0, 0, 0] / 0.1
    assert gains.min() >= 1.0 - 1e-6 and gains.max() <= 2.0 + 1e-6  # within [1, 1 + gain], never darker
    assert gains.unique().numel() > 32  # each image its own factor
    assert bright.max() == 1.0 and bright[gains > 1.25, 0, 4, 4].eq(1.0).all()  # the core saturates
    assert bright[:, :, 2, 2].eq(0).all()  # blank sky stays blank


def test_training_brightens_blurs_and_adds_noise_when_asked(tmp_path, weights_file, monkeypatch):
    import galaxytune.training.module as module

    seen = []

    def spy(name):
        real = getattr(module, name)

        def recorded(x, level):
            seen.append((name, level))
            return real(x, level)
        return recorded

    for name in ("random_brightness", "random_blur", "random_noise"):
        monkeypatch.setattr(module, name, spy(name))
    write_folder(tmp_path / "data", dict.fromkeys(COLOURS, 10))
    assert main(["train", "--data", str(tmp_path / "data"), "--out", str(tmp_path / "run"), "--weights",
                 str(weights_file), *FAST, "finetune.brightness=0.5", "finetune.blur=1.5",
                 "finetune.noise=0.03"]) == 0
    assert {("random_brightness", 0.5), ("random_blur", 1.5), ("random_noise", 0.03)} <= set(seen)
    for bad in ("finetune.noise=-0.1", "finetune.brightness=-1"):
        with pytest.raises(ConfigError, match=bad.split("=")[0]):
            load_config(overrides=[bad])


def test_asinh_stretch_lifts_faint_pixels_and_travels_with_the_saved_model(tmp_path, weights_file):
    linear = create_classifier("mobilenetv1_100", 3, str(weights_file))
    stretched = create_classifier("mobilenetv1_100", 3, str(weights_file), stretch="asinh", softening=0.05)
    faint = torch.full((1, 3, 4, 4), 10, dtype=torch.uint8)
    assert (stretched.normalise(faint) > linear.normalise(faint) + 0.3).all()
    bright = torch.full((1, 3, 4, 4), 255, dtype=torch.uint8)
    assert torch.allclose(stretched.normalise(bright), linear.normalise(bright))

    write_folder(tmp_path / "data", dict.fromkeys(COLOURS, 10))
    run = tmp_path / "run"
    assert main(["train", "--data", str(tmp_path / "data"), "--out", str(run), "--weights", str(weights_file), *FAST,
                 "data.stretch=asinh", "data.stretch_softening=[1, 0.05, 5e-3]"]) == 0
    net, info = load_model(run)
    assert (info.stretch, info.stretch_softening) == ("asinh", [1.0, 0.05, 0.005]) and net.stretch == "asinh"
    # One softening per channel: a faint grey pixel is lifted least where the softening is largest.
    grey = stretch_pixels(torch.full((1, 3, 2, 2), 0.02), "asinh", info.stretch_softening)[0, :, 0, 0]
    assert 0.02 < grey[0] < grey[1] < grey[2]
    assert torch.allclose(stretch_pixels(torch.ones(1, 3, 2, 2), "asinh", info.stretch_softening), torch.ones(1))
    assert export_onnx(run).is_file()  # the export checks ONNX Runtime's outputs against PyTorch's
    for bad in ("[1, 0.05]", "0", "[1, 0.05, 20]"):
        with pytest.raises(ConfigError, match="data.stretch_softening"):
            load_config(overrides=[f"data.stretch_softening={bad}"])


def test_drop_path_on_a_network_without_skip_connections_is_flagged(tmp_path, weights_file, capsys):
    assert drop_path_is_idle(create_classifier("mobilenetv1_100", 3, "none", kwargs={"drop_path_rate": 0.1}).backbone)
    assert not drop_path_is_idle(create_classifier("mobilenetv1_100", 3, "none").backbone)
    assert not drop_path_is_idle(
        create_classifier("mobilenetv2_100", 3, "none", kwargs={"drop_path_rate": 0.1}).backbone)
    write_folder(tmp_path / "data", dict.fromkeys(COLOURS, 10))
    assert main(["train", "--data", str(tmp_path / "data"), "--out", str(tmp_path / "run"), "--weights",
                 str(weights_file), *FAST, "model.kwargs.drop_path_rate=0.1"]) == 0
    printed = capsys.readouterr()
    assert "drop_path_rate does nothing on mobilenetv1_100" in printed.out + printed.err


def test_offsets_are_dropped_out_of_bag_when_they_do_not_help_and_kept_when_they_do():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 600)
    clean = np.eye(3)[y] * 2 + rng.normal(0, 1, (600, 3))
    rule = fit_decision_rule(clean, y, "macro_f1", max_accuracy_drop=0.01)
    assert not rule.check.kept and rule.offsets == [0.0, 0.0, 0.0]
    assert "dropped" in rule.check.describe()
    shifted = clean - np.array([0.0, 0.0, 2.5])  # class 2 is under-predicted: an offset repairs it
    check = check_offsets(shifted, y, "macro_f1", 3.0, 0.01)
    assert check.kept and check.metric_gain > 0.05 and check.accuracy_change > 0
    # No accuracy may be given up: a rule that trades accuracy for macro-F1 is dropped.
    assert not check_offsets(shifted, y, "macro_f1", 3.0, -1.0).kept


def test_a_stage_is_scored_with_its_offsets_judged_out_of_bag_not_fitted_on_the_images_it_is_scored_on():
    """The finetune guard and TTA compare stages by this score: offsets fitted and scored on the
    same images would flatter the stage with the noisiest logits."""
    rng = np.random.default_rng(1)
    y = rng.choice(4, 300, p=[0.7, 0.1, 0.1, 0.1])
    noise = rng.normal(0, 1, (300, 4)) + np.array([1.0, 0.0, 0.0, 0.0])  # no signal, only the prior
    fitted = fit_decision_rule(noise, y, "macro_f1", temperature=False)
    in_sample = score(y, fitted.adjusted_logits(noise).argmax(axis=1), "macro_f1")
    out_of_bag = check_offsets(noise, y, "macro_f1", 2.0, 0.01)
    assert in_sample > out_of_bag.score + 0.02  # the in-sample fit finds "signal" in noise (0.28 against 0.25)
    assert out_of_bag.score < 0.3  # chance level for macro-F1 on 4 classes is about 0.2-0.25
    # Logits that rank the classes well but under-predict one score high once offsets repair it.
    ranked = np.eye(4)[y] * 2 + rng.normal(0, 1, (300, 4)) - np.array([0.0, 0.0, 0.0, 2.5])
    repaired = check_offsets(ranked, y, "macro_f1", 3.0, 1.0)
    assert repaired.kept and repaired.score > score(y, ranked.argmax(axis=1), "macro_f1") + 0.05


def test_tta_is_kept_only_when_it_wins_on_validation(tmp_path, weights_file):
    write_folder(tmp_path / "data", dict.fromkeys(COLOURS, 10))
    run = tmp_path / "run"
    assert main(["train", "--data", str(tmp_path / "data"), "--out", str(run), "--weights", str(weights_file),
                 *FAST]) == 0
    stages = {s["stage"]: s for s in json.loads((run / "stages.json").read_text())}
    info = galaxytune.load(run).info
    # Either way, the saved model predicts as the stage table says it was scored.
    assert info.tta == ("tta" in stages)
    rows = [r["stage"] for r in csv.DictReader(open(run / "stage_table.csv"))]
    assert ("tta" in rows) == info.tta
    with pytest.raises(ConfigError, match="decision.tta"):
        load_config(overrides=["decision.tta=sometimes"])


def test_split_folders_hold_a_sources_valid_folder_out_as_test(tmp_path):
    root = tmp_path / "data"
    write_folder(root / "train", dict.fromkeys(COLOURS, 12))
    write_folder(root / "valid", dict.fromkeys(COLOURS, 4), seed=1)
    cfg = load_config(overrides=[f"data.path={root}", "data.split_folders={test: valid}", "data.image_size=32"])
    data = prepare(cfg.data, None)
    assert all(p.parent.parent.name == "valid" for p in data.sets["test"].paths)
    assert len(data.sets["test"]) == 12
    assert all(p.parent.parent.name == "train" for p in data.sets["val"].paths)
    with pytest.raises(DataError, match="no such folder"):
        prepare(load_config(overrides=[f"data.path={root}", "data.split_folders={test: holdout}"]).data, None)
    with pytest.raises(ConfigError, match="split_folders"):
        load_config(overrides=["data.split_folders={testing: valid}"])


def test_second_run_reads_decoded_images_and_features_from_the_disk_cache(tmp_path, weights_file, capsys,
                                                                          monkeypatch):
    monkeypatch.setenv("GALAXYTUNE_CACHE", str(tmp_path / "cache"))
    write_folder(tmp_path / "data", dict.fromkeys(COLOURS, 10))
    args = ["--data", str(tmp_path / "data"), "--weights", str(weights_file), *FAST, "decision.tta=false"]
    assert main(["train", "--out", str(tmp_path / "a"), *args]) == 0
    first = capsys.readouterr().out
    entries = sorted(p.name.split("-")[0] for p in (tmp_path / "cache" / "arrays").iterdir())
    assert entries == ["decoded", "features", "features", "features"]
    assert main(["train", "--out", str(tmp_path / "b"), *args]) == 0
    assert "read from the cache" not in first and "Decoded images read from the cache" in capsys.readouterr().out
    # The same numbers, cold cache or warm.
    same = [np.load(tmp_path / run / "stage_outputs.npz")["transfer_val"] for run in ("a", "b")]
    np.testing.assert_allclose(same[0], same[1], rtol=1e-5, atol=1e-7)
    # What the cache holds is what the frozen backbone computes.
    cfg = load_config(overrides=[f"data.path={tmp_path / 'data'}", f"model.weights={weights_file}", *FAST[:2]])
    data = prepare(cfg.data, None)
    net = create_classifier("mobilenetv1_100", 3, str(weights_file))
    fresh = run_batches(Features(net), data.sets["val"], "features", batch_size=64).numpy()
    cached = [np.load(p)["features"] for p in (tmp_path / "cache" / "arrays").glob("features-*")]
    assert any(c.shape == fresh.shape and np.allclose(c, fresh, atol=1e-5) for c in cached)
    capsys.readouterr()
    # Changed pixels are a new key, never a stale hit.
    image = next((tmp_path / "data" / "red").iterdir())
    Image.fromarray(np.zeros((40, 40, 3), np.uint8)).save(image)
    assert main(["train", "--out", str(tmp_path / "c"), *args]) == 0
    assert "read from the cache" not in capsys.readouterr().out
    assert len(list((tmp_path / "cache" / "arrays").glob("decoded-*"))) == 2


def test_progressive_resizing_trains_the_first_epochs_small(tmp_path, weights_file):
    write_folder(tmp_path / "data", dict.fromkeys(COLOURS, 10))
    run = tmp_path / "run"
    assert main(["train", "--data", str(tmp_path / "data"), "--out", str(run), "--weights", str(weights_file), *FAST,
                 "finetune.start_size=16", "finetune.epochs=2"]) == 0
    assert (run / "models" / "model.safetensors").is_file()
    with pytest.raises(ConfigError, match="finetune.start_size"):
        load_config(overrides=["data.image_size=32", "finetune.start_size=64"])


def test_class_weights_favour_rare_classes_and_average_one_over_the_training_images():
    targets = torch.tensor([0] * 90 + [1] * 10)
    assert class_weights(targets, 2, "none") is None
    balanced = class_weights(targets, 2, "balanced")
    assert balanced[1] / balanced[0] == pytest.approx(9.0)
    assert class_weights(targets, 2, "sqrt")[1] / class_weights(targets, 2, "sqrt")[0] == pytest.approx(3.0)
    for rule in ("balanced", "sqrt"):
        assert class_weights(targets, 2, rule)[targets].mean().item() == pytest.approx(1.0)


def test_weight_averaging_keeps_the_average_of_the_weights(tmp_path, weights_file):
    """With finetune.ema_epochs the best checkpoint, and so the finetuned model, holds the moving
    average of the weights (validated in their place), not the raw weights of that epoch."""
    write_folder(tmp_path / "data", dict.fromkeys(COLOURS, 10))
    run = tmp_path / "run"
    assert main(["train", "--data", str(tmp_path / "data"), "--out", str(run), "--weights", str(weights_file), *FAST,
                 "finetune.ema_epochs=1", "finetune.epochs=2", "finetune.batch_size=4", "finetune.guard=false",
                 "decision.enabled=false", "decision.tta=false"]) == 0
    best = torch.load(run / "checkpoints" / "finetune.ckpt", map_location="cpu", weights_only=False)
    average, raw = best["state_dict"], best["current_model_state"]
    assert any(not torch.equal(average[k], raw[k]) for k in average if k.startswith("net.backbone"))
    saved, _ = load_model(run)
    name = next(k for k in average if k.startswith("net.backbone") and k.endswith("weight"))
    assert torch.equal(saved.state_dict()[name[len("net."):]], average[name])
    with pytest.raises(ConfigError, match="finetune.ema_epochs"):
        load_config(overrides=["finetune.ema_epochs=-1"])


def test_mixup_blends_each_image_with_its_partner_and_trains(tmp_path, weights_file):
    from galaxytune.training.module import mix_batch

    torch.manual_seed(0)
    x = torch.stack([torch.full((3, 4, 4), v, dtype=torch.uint8) for v in (0, 51, 102, 255)])
    mixed, lam, partner = mix_batch(x, 0.4)
    assert 0 < lam < 1 and sorted(partner.tolist()) == [0, 1, 2, 3]
    expected = lam * x.float() / 255 + (1 - lam) * x[partner].float() / 255
    assert torch.allclose(mixed, expected)
    # Class targets and vote counts (the question head) are mixed alike.
    run = tmp_path / "run"
    assert main(["train", "--data", str(_gz2_table(tmp_path / "data")), "--out", str(run), "--weights",
                 str(weights_file), *FAST, "data.label_column=derived_class", "finetune.mixup=0.4",
                 "finetune.guard=false"]) == 0
    logged = [r for r in csv.DictReader(open(run / "logs" / "finetune" / "metrics.csv")) if r.get("train_loss")]
    assert logged and all(math.isfinite(float(r["train_loss"])) and float(r["train_question_loss"]) > 0
                          for r in logged)


def test_early_stopping_waits_for_the_full_size_epochs(tmp_path):
    """Progressive resizing: the shrunk epochs, which full-size validation scores low, do not
    count towards the patience. Here the validation score falls every epoch."""
    import lightning as L

    from galaxytune.training.fit import EarlyStoppingFrom

    class Falling(L.LightningModule):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(1))

        def training_step(self, batch, batch_idx):
            return (self.w - 1).pow(2).sum()

        def validation_step(self, batch, batch_idx):
            self.log("score", -float(self.current_epoch))

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    loader = torch.utils.data.DataLoader(torch.zeros(2, 1), batch_size=2)
    for first, epochs_run in ((0, 2), (3, 5)):
        trainer = L.Trainer(max_epochs=10, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                            enable_model_summary=False, default_root_dir=tmp_path,
                            callbacks=[EarlyStoppingFrom(first, monitor="score", mode="max", patience=1)])
        trainer.fit(Falling(), loader, loader)
        assert trainer.current_epoch == epochs_run  # best at epoch `first`, one more epoch of patience


def test_cutmix_pastes_a_box_of_the_partner_and_weighs_targets_by_area(tmp_path, weights_file):
    from galaxytune.training.module import cut_batch

    torch.manual_seed(1)
    x = torch.stack([torch.full((3, 8, 8), v, dtype=torch.uint8) for v in (0, 51, 102, 255)])
    for _ in range(20):
        cut, lam, partner = cut_batch(x, 1.0)
        assert cut.dtype == x.dtype and sorted(partner.tolist()) == [0, 1, 2, 3]
        from_partner = (cut == x[partner]) & (x[partner] != x)  # pixels that came from the partner
        for i in range(4):
            if partner[i] != i:  # the pasted share is 1 - lam, the weight of the partner's target
                assert from_partner[i, 0].float().mean().item() == pytest.approx(1 - lam)
        assert 0 <= lam <= 1 and torch.equal(from_partner[:, 0], from_partner[:, 2])  # every channel alike
    # Both mixers set: each batch takes one of them; the vote counts are mixed alike.
    run = tmp_path / "run"
    assert main(["train", "--data", str(_gz2_table(tmp_path / "data")), "--out", str(run), "--weights",
                 str(weights_file), *FAST, "data.label_column=derived_class", "finetune.cutmix=1.0",
                 "finetune.mixup=0.4", "finetune.guard=false"]) == 0
    logged = [r for r in csv.DictReader(open(run / "logs" / "finetune" / "metrics.csv")) if r.get("train_loss")]
    assert logged and all(math.isfinite(float(r["train_loss"])) for r in logged)


def test_learning_rate_sweep_restores_the_weights_and_suggests_a_rate(tmp_path):
    from galaxytune.training.lr_finder import HIGHEST, LOWEST, SWEEP_STEPS, find_lr
    from galaxytune.training.module import ClassifierModule

    torch.manual_seed(0)
    x, y = torch.randn(64, 12), torch.randint(0, 3, (64,))
    net = torch.nn.Linear(12, 3)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    module = ClassifierModule(net, 3, [{"params": list(net.parameters()), "lr": 1e-3, "weight_decay": 0.0}])
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=8, shuffle=True)
    rng = torch.get_rng_state()
    sweep = find_lr(module, loader, load_config().trainer, tmp_path)
    assert torch.equal(torch.get_rng_state(), rng)  # the fit after it draws what it would have drawn
    assert LOWEST <= sweep.suggestion <= HIGHEST and sweep.suggestion in sweep.rates
    assert 10 < len(sweep.rates) == len(sweep.losses) <= SWEEP_STEPS
    assert all(torch.equal(net.state_dict()[k], v) for k, v in before.items())
    assert not list(tmp_path.glob("*.ckpt"))  # Lightning's temporary copy of the weights is gone


def test_learning_rate_sweep_refuses_several_processes(tmp_path, monkeypatch):
    """Each process would sweep its own share and suggest its own rate: refused, with what to do."""
    import galaxytune.training.lr_finder as lr_finder

    monkeypatch.setattr(lr_finder, "world", lambda: (0, 2))
    with pytest.raises(ConfigError, match="set finetune.lr"):
        lr_finder.find_lr(None, None, load_config().trainer, tmp_path)


def test_learning_rate_sweep_sets_the_finetune_peak_rate(tmp_path, weights_file):
    """finetune.find_lr: the suggested rate replaces finetune.lr (here absurdly high, so that a
    run that ignored the sweep would show it) and the sweep is in the stage's note and the report."""
    write_folder(tmp_path / "data", dict.fromkeys(COLOURS, 10))
    run = tmp_path / "run"
    assert main(["train", "--data", str(tmp_path / "data"), "--out", str(run), "--weights", str(weights_file), *FAST,
                 "finetune.find_lr=true", "finetune.lr=50", "finetune.epochs=1", "finetune.warmup_epochs=0",
                 "finetune.guard=false", "decision.enabled=false", "decision.tta=false"]) == 0
    note = next(s for s in json.loads((run / "stages.json").read_text()) if s["stage"] == "finetune")["note"]
    suggested = float(note.split("peak rate ")[1].split(" ")[0])
    # One epoch of cosine decay from the peak, no warm-up: the epoch's mean rate over its n steps
    # is peak * (1/2 + 1/(2n)) (the top group's rate is the one logged).
    n_train = sum(row["split"] == "train" for row in csv.DictReader(open(run / "splits.csv")))
    steps = n_train // 16
    logged = [float(r["lr"]) for r in csv.DictReader(open(run / "logs" / "finetune" / "metrics.csv")) if r.get("lr")]
    assert logged == [pytest.approx(suggested * (0.5 + 0.5 / steps), rel=0.01)]
    assert (run / "plots" / "lr_sweep.png").is_file()
    assert "learning-rate sweep before finetuning" in (run / "report.html").read_text()


def test_early_stopping_can_wait_for_a_share_of_the_epochs():
    from galaxytune.training.stages import first_counted_epoch

    assert first_counted_epoch(FinetuneConfig(epochs=16), 0) == 0
    assert first_counted_epoch(FinetuneConfig(epochs=30, patience_from=0.5), 0) == 15
    assert first_counted_epoch(FinetuneConfig(epochs=15, patience_from=0.5), 0) == 8
    # Progressive resizing's shrunk epochs never count, whichever comes later.
    assert first_counted_epoch(FinetuneConfig(epochs=16, patience_from=0.25), 8) == 8
    with pytest.raises(ConfigError, match="finetune.patience_from=1.0 must be"):
        load_config(overrides=["finetune.patience_from=1.0"])
