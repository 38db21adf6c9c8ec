"""Fine-tuning: start from a weights file with a different head, get a fresh (zero) classifier for the new
classes, optionally with a frozen backbone that does not move."""

import torch

from effnet.network import ConvNet
from effnet.train import TrainConfig, Trainer
from effnet.train import checkpoint as ckpt
from effnet.weights import save_file
from tests import _train_util as U
from tests.conftest import tiny_spec


def _setup(tmp_path):
    data = U.make_folder(tmp_path / "data", classes=3, per_class=8, val_per_class=2)
    spec_path = U.write_spec(tmp_path / "tiny.json", num_classes=10)
    source = ConvNet(tiny_spec(num_classes=10))  # "pretrained" on 10 classes
    weights = tmp_path / "tiny.safetensors"
    save_file(source, weights)
    return data, spec_path, source, weights


def test_pretrained_file_with_fresh_classifier_and_frozen_backbone(tmp_path):
    data, spec_path, source, weights = _setup(tmp_path)
    cfg = U.base_config(data, spec_path, tmp_path / "run", pretrained=str(weights), freeze_backbone=True, epochs=2,
                        ema_decay=0.0)
    trainer = Trainer(TrainConfig(**cfg))
    assert trainer.model.classifier.out_features == 3
    assert torch.count_nonzero(trainer.model.classifier.weight) == 0  # fresh head starts at zero
    before = {k: v.clone() for k, v in source.state_dict().items() if not k.startswith("classifier")}
    for k, v in before.items():
        assert torch.equal(trainer.model.state_dict()[k], v), k
    trainer.fit()
    trainer.close()
    after = ckpt.load_checkpoint(tmp_path / "run")["model"]
    for k, v in before.items():
        assert torch.equal(after[k], v), f"frozen {k} changed"
    assert torch.count_nonzero(after["classifier.weight"]) > 0


def test_lower_backbone_lr_scales_only_the_backbone_groups(tmp_path):
    data, spec_path, _, weights = _setup(tmp_path)
    cfg = U.base_config(data, spec_path, None, pretrained=str(weights), backbone_lr_scale=0.1, steps=3, lr=0.01)
    trainer = Trainer(TrainConfig(**cfg))
    trainer.fit()
    lrs = {g["name"]: g["lr"] for g in trainer.optimizer.param_groups}
    assert lrs["classifier/decay"] == trainer.schedule(2)
    assert abs(lrs["backbone/decay"] - 0.1 * lrs["classifier/decay"]) < 1e-12
    trainer.close()


def test_fine_tuning_normalises_with_the_weights_files_preprocessing(tmp_path):
    import json

    data, spec_path, source, _ = _setup(tmp_path)
    weights = tmp_path / "recorded.safetensors"
    recorded = {"mean": [0.1, 0.2, 0.3], "std": [0.4, 0.5, 0.6]}
    save_file(source, weights, metadata={"preprocessing": json.dumps(recorded)})
    cfg = U.base_config(data, spec_path, tmp_path / "run", pretrained=str(weights), epochs=1)
    trainer = Trainer(TrainConfig(**cfg))
    assert (trainer.plan.mean, trainer.plan.std) == ((0.1, 0.2, 0.3), (0.4, 0.5, 0.6))
    assert trainer._model_config().mean == (0.1, 0.2, 0.3)
    trainer.close()


def test_trainer_fuses_bn_silu_by_default_and_the_flag_turns_it_off(tmp_path):
    from effnet.optimize import _FusedConvNormAct
    from effnet.train.config import recipe_lines

    data, spec_path, _, _ = _setup(tmp_path)
    for fused in (True, False):
        config = TrainConfig(**U.base_config(data, spec_path, None, fused_bn_silu=fused))
        trainer = Trainer(config)
        kinds = {type(m) for m in trainer.model.modules()}
        assert (_FusedConvNormAct in kinds) is fused
        line = dict(recipe_lines(config, trainer.plan, "tiny"))["BN+SiLU"]
        assert line.startswith("fused") is fused


def test_the_recipe_says_when_effnets_cpu_kernels_cannot_be_built(tmp_path, monkeypatch):
    from effnet import layers
    from effnet.train.config import recipe_lines

    data, spec_path, _, _ = _setup(tmp_path)
    config = TrainConfig(**U.base_config(data, spec_path, None))
    trainer = Trainer(config)
    line = dict(recipe_lines(config, trainer.plan, "tiny"))["convolutions"]
    assert "BN+SiLU and squeeze-excite by effnet's C kernels" in line and "cannot be built" not in line
    monkeypatch.setattr(layers.ops, "kernel_available", lambda: False)
    monkeypatch.setattr(layers.ops.native, "build_problem", lambda name: "no C compiler found (set CC, or install gcc)")
    line = dict(recipe_lines(config, trainer.plan, "tiny"))["convolutions"]
    assert "cannot be built here (no C compiler found" in line
    off = TrainConfig(**U.base_config(data, spec_path, None, own_kernels=False))
    assert dict(recipe_lines(off, trainer.plan, "tiny"))["convolutions"] == "stock (ATen/oneDNN)"
    trainer.close()
