"""The training loop: `train(TrainConfig) -> TrainResult`, one process or many (torchrun).

Every batch is a function of (seed, step): the sampler's order of (seed, epoch), each sample's augmentation of
(seed, epoch, index), and dropout/drop-path masks of the global RNG re-seeded from (seed, step, rank) before each
step.  A checkpoint therefore needs only the step (plus model, EMA, optimizer and the epoch's running sums) to
continue exactly where it stopped; RNG states are saved as well, for anything outside the step.
"""

from __future__ import annotations

import json
import math
import random
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader

from effnet.data import ResumableSampler, TransformedSource, collate, train_transform
from effnet.data.loader import mix_seed
from effnet.data.sources import DataError
from effnet.errors import EffnetError
from effnet.network import ConvNet
from effnet.optimize import fuse_bn_silu_for_training
from effnet.registry import create_model, get_config, get_spec
from effnet.spec import NetSpec, with_options
from effnet.train import checkpoint as ckpt
from effnet.train import distributed
from effnet.train.config import RESUME_KEYS, ConfigError, TrainConfig, check_config, recipe_lines
from effnet.train.ema import ModelEma
from effnet.train.evaluate import _unreadable_error, eval_loader, evaluate
from effnet.train.optim import make_optimizer, param_groups
from effnet.train.plan import make_plan, open_data
from effnet.train.schedule import make_schedule


class TrainingDiverged(EffnetError, RuntimeError):
    """The loss became NaN or infinite; the run stopped without writing the bad state."""


@dataclass(frozen=True)
class TrainResult:
    """Final metrics of a run (validation metrics in percent, on the val split — the test split for
    Fashion-MNIST), plus the per-epoch history as written to metrics.jsonl."""

    top1: float
    top5: float
    ema_top1: float | None
    ema_top5: float | None
    val_loss: float
    train_loss: float
    train_acc: float
    best_top1: float
    epochs: float
    steps: int
    wall_s: float
    images_per_s: float
    skipped_images: int
    run_dir: str | None
    history: tuple[dict[str, Any], ...]


def train(config: TrainConfig) -> TrainResult:
    """Run `config` to its budget and return the final metrics (the API the α/β/γ grid search calls)."""
    trainer = Trainer(config)
    try:
        return trainer.fit()
    finally:
        trainer.close()


class Trainer:
    """Holds one run's state.  `Trainer(config).fit()` is `train(config)`; the pieces are methods so that a
    reader can follow one step (`_step`), one epoch (`_run_epoch`) and the checkpoint contents (`_state`)."""

    def __init__(self, config: TrainConfig) -> None:
        check_config(config)
        self.c = c = config
        if c.threads:
            torch.set_num_threads(c.threads)  # on a shared CPU, fewer threads than cores is often faster
        self.run_dir = Path(c.out_dir) if c.out_dir else None
        spec = get_spec(c.model)
        self.train_src, self.val_src = open_data(c)
        resume_state = self._find_resume()
        self.dist = distributed.setup(c.device)
        self.main = self.dist.is_main
        self.plan = p = make_plan(c, spec, self.train_src, self.val_src, self.dist.world_size)
        self.spec_name = spec.name
        self.schedule = replace(
            make_schedule(base_lr=p.base_lr, steps_per_epoch=p.steps_per_epoch, warmup_epochs=c.warmup_epochs,
                          decay_epochs=c.decay_epochs, decay_rate=c.decay_rate),
            warmup_steps=p.warmup_steps,
        )
        self.device = self.dist.device
        self.model = self._build_model(spec, resume_state)
        self.ema = ModelEma(self.model, c.ema_decay, c.ema_warmup) if c.ema_decay > 0 else None
        groups = param_groups(self.model, c.weight_decay, backbone_lr_scale=c.backbone_lr_scale)
        self.optimizer = make_optimizer(c.optimizer, groups, lr=p.base_lr, decay=c.rmsprop_decay,
                                        momentum=c.momentum, eps=c.eps)
        self.criterion = nn.CrossEntropyLoss(label_smoothing=c.label_smoothing)
        self.step, self.best, self.history = 0, -math.inf, []
        self.epoch_sums = torch.zeros(4, dtype=torch.float64)  # loss·n, correct, n, skipped
        self.skipped_total = 0
        if resume_state is not None:
            self._restore(resume_state)
        self.ddp = (DistributedDataParallel(self.model, device_ids=[self.device.index] if self.device.type == "cuda"
                                            else None) if self.dist.distributed else self.model)
        self.train_loader, self.sampler = self._train_loader()
        self.val_loader = eval_loader(self.val_src, self._model_config(), batch_size=max(p.per_rank_batch, 64),
                                      workers=c.workers, crop_fraction=p.eval_crop_fraction, rank=self.dist.rank,
                                      world_size=self.dist.world_size)

    # -- set-up ----------------------------------------------------------------------------------------------

    def _find_resume(self) -> dict[str, Any] | None:
        c = self.c
        if not c.resume:
            return None
        if isinstance(c.resume, str):
            state = ckpt.load_checkpoint(c.resume)
        else:
            if self.run_dir is None:
                raise ConfigError("resume: got True without out_dir; expected the run folder to resume (--out)")
            ckpt.remove_stale_temporaries(ckpt.checkpoint_dir(self.run_dir))
            latest = ckpt.latest_checkpoint(self.run_dir)
            if latest is None:
                return None  # nothing saved yet: start from the beginning
            state = ckpt.load_checkpoint(latest)
        saved, now = state.get("config", {}), c.to_dict()
        diff = [k for k in RESUME_KEYS if k in saved and saved[k] != now[k]]
        if diff:
            changes = ", ".join(f"{k}: {saved[k]!r} -> {now[k]!r}" for k in diff)
            raise ConfigError(f"{state['path']}: cannot resume with different settings ({changes}); "
                              "rerun the original command with --resume")
        return state

    def _build_model(self, spec: NetSpec, resume_state: dict[str, Any] | None) -> nn.Module:
        c, p = self.c, self.plan
        torch.manual_seed(c.seed)  # the same initial weights in every process and on every rerun
        if resume_state is not None:
            model = ConvNet(NetSpec.from_dict(resume_state["spec"]))
        else:
            options = dict(num_classes=p.num_classes, drop_rate=p.dropout, drop_path_rate=p.drop_path,
                           resolution=p.resolution, bn_momentum=p.bn_momentum)
            if c.pretrained:
                try:
                    model = create_model(c.model, pretrained=c.pretrained, **options)
                except ImportError as exc:
                    raise ConfigError(f"pretrained: weights for {spec.name!r} need effnet.weights ({exc})") from None
                model.spec = with_options(model.spec, **{k: v for k, v in options.items() if k != "drop_rate"},
                                          dropout=p.dropout)
                # A fresh head starting at zero gives uniform predictions (loss ln C) instead of large random
                # logits whose gradients would first scramble the pretrained backbone (as in BiT's fine-tuning).
                if isinstance(model.classifier, nn.Linear):
                    nn.init.zeros_(model.classifier.weight)
                    nn.init.zeros_(model.classifier.bias)
            else:
                model = create_model(c.model, **options)
        if c.freeze_backbone:
            for name, param in model.named_parameters():
                param.requires_grad_(name.startswith("classifier."))
        if c.fused_bn_silu:
            fuse_bn_silu_for_training(model)
        model.to(self.device)
        if c.channels_last:
            model.to(memory_format=torch.channels_last)
        return model

    def _model_config(self):
        p = self.plan
        cfg = get_config(self.model.spec, p.resolution)
        return replace(cfg, crop_fraction=p.eval_crop_fraction, mean=p.mean, std=p.std)

    def _train_loader(self) -> tuple[DataLoader, ResumableSampler]:
        c = self.c
        transform = train_transform(self._model_config(), augment=c.augment, randaugment_n=c.randaugment_n,
                                    randaugment_m=c.randaugment_m, crop_scale=tuple(c.crop_scale), hflip=c.hflip,
                                    grayscale=self.train_src.grayscale)
        dataset = TransformedSource(self.train_src, transform)
        sampler = ResumableSampler(dataset, num_replicas=self.dist.world_size, rank=self.dist.rank, seed=c.seed)
        loader = DataLoader(dataset, batch_size=self.plan.per_rank_batch, sampler=sampler, drop_last=True,
                            num_workers=c.workers, collate_fn=collate, persistent_workers=False)
        return loader, sampler

    # -- checkpoint state --------------------------------------------------------------------------------------

    def _state(self) -> dict[str, Any]:
        np_state = np.random.get_state()
        cfg = self._model_config()
        return {
            "format": "effnet-train/1",
            "spec": self.model.spec.to_dict(),
            "classes": list(self.train_src.classes),
            "preprocess": {"resolution": cfg.resolution, "crop_fraction": cfg.crop_fraction,
                           "interpolation": cfg.interpolation, "mean": tuple(cfg.mean), "std": tuple(cfg.std)},
            "config": self.c.to_dict(),
            "step": self.step,
            "model": self.model.state_dict(),
            "ema": self.ema.state_dict() if self.ema else None,
            "optimizer": self.optimizer.state_dict(),
            "epoch_sums": self.epoch_sums.clone(),
            "best": self.best,
            "skipped_total": self.skipped_total,
            "history": list(self.history),
            "rng": {"torch": torch.get_rng_state(), "python": list(random.getstate()[1]),
                    "python_version": random.getstate()[0], "python_gauss": random.getstate()[2],
                    "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *np_state[2:]]},
        }

    def _restore(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        if self.ema and state.get("ema"):
            self.ema.load_state_dict(state["ema"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.step = int(state["step"])
        self.epoch_sums = state["epoch_sums"].clone()
        self.best = float(state["best"])
        self.skipped_total = int(state["skipped_total"])
        self.history = list(state["history"])
        rng = state["rng"]
        torch.set_rng_state(rng["torch"])
        random.setstate((rng["python_version"], tuple(rng["python"]), rng["python_gauss"]))
        n = rng["numpy"]
        np.random.set_state((n[0], n[1].numpy().astype(np.uint32), *n[2:]))
        if self.run_dir is not None and self.main:
            _truncate_jsonl(self.run_dir / "metrics.jsonl", self.step)
            _truncate_jsonl(self.run_dir / "steps.jsonl", self.step)
        self._log(f"resumed from {state['path']} at step {self.step}")

    def _save(self, best: bool = False) -> None:
        if self.run_dir is None or not self.main:
            return
        for t in self.model.parameters():
            if not torch.isfinite(t).all():
                raise self._diverged("a weight is not finite")
        state = self._state()
        ckpt.save_step_checkpoint(self.run_dir, state, self.step, self.c.keep_last)
        if best:
            ckpt.save_best(self.run_dir, state)

    # -- the loop ------------------------------------------------------------------------------------------------

    def fit(self) -> TrainResult:
        c, p = self.c, self.plan
        if self.main and self.run_dir is not None:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            ckpt.remove_stale_temporaries(ckpt.checkpoint_dir(self.run_dir))
            lines = recipe_lines(c, p, self.spec_name)
            (self.run_dir / "recipe.txt").write_text("".join(f"{k:20s} {v}\n" for k, v in lines))
            (self.run_dir / "config.json").write_text(json.dumps(c.to_dict(), indent=2) + "\n")
        start, images = time.perf_counter(), 0
        while self.step < p.total_steps:
            images += self._run_epoch()
        wall = time.perf_counter() - start
        distributed.barrier()
        last = self.history[-1] if self.history else {}
        if self.skipped_total:
            self._log(f"skipped {self.skipped_total} unreadable image(s) in training (see metrics.jsonl)")
        return TrainResult(
            top1=last.get("val_top1", float("nan")), top5=last.get("val_top5", float("nan")),
            ema_top1=last.get("ema_top1"), ema_top5=last.get("ema_top5"), val_loss=last.get("val_loss", float("nan")),
            train_loss=last.get("train_loss", float("nan")), train_acc=last.get("train_acc", float("nan")),
            best_top1=self.best, epochs=self.step / p.steps_per_epoch, steps=self.step, wall_s=wall,
            images_per_s=images / wall if wall > 0 else 0.0, skipped_images=self.skipped_total,
            run_dir=str(self.run_dir) if self.run_dir else None, history=tuple(self.history),
        )

    def _run_epoch(self) -> int:
        c, p = self.c, self.plan
        epoch, offset = divmod(self.step, p.steps_per_epoch)
        end = min((epoch + 1) * p.steps_per_epoch, p.total_steps)
        self.sampler.set_position(epoch, offset * p.per_rank_batch)
        self._train_mode()
        bar = self._progress(epoch, offset, end - epoch * p.steps_per_epoch)
        t0, images, window = time.perf_counter(), 0, torch.zeros(3, dtype=torch.float64)
        for images_b, labels, skipped in self.train_loader:
            stats = self._step(images_b, labels, skipped)
            images += int(stats[2].item())
            window += stats[:3]
            self.step += 1
            rate = images / max(time.perf_counter() - t0, 1e-9)
            if bar is not None:
                s = self.epoch_sums
                bar.update(1)
                bar.set_postfix(loss=f"{s[0] / max(s[2], 1):.4f}", acc=f"{100 * s[1] / max(s[2], 1):.2f}%",
                                img_s=f"{rate:.0f}", lr=f"{self.schedule(self.step - 1):.2e}", refresh=False)
            if self.step % c.log_every == 0:
                self._append("steps.jsonl", {"step": self.step, "epoch": self.step / p.steps_per_epoch,
                                             "loss": window[0].item() / max(window[2].item(), 1),
                                             "acc": 100 * window[1].item() / max(window[2].item(), 1),
                                             "lr": self.schedule(self.step - 1), "img_per_s": rate})
                window.zero_()
            if self.step >= end:
                break
            if c.checkpoint_every and self.step % c.checkpoint_every == 0:
                self._save()
        if bar is not None:
            bar.close()
        self._end_epoch(epoch, images, time.perf_counter() - t0)
        return images

    def _step(self, images: torch.Tensor | None, labels: torch.Tensor | None, skipped: list) -> torch.Tensor:
        c = self.c
        if skipped:
            if c.strict:
                raise _unreadable_error(skipped[0])
            self.epoch_sums[3] += len(skipped)
        if images is None:
            if self.dist.distributed:
                raise DataError(f"every image of a batch was unreadable (first: {skipped[0].path}); fix the data")
            return torch.zeros(4, dtype=torch.float64)
        torch.manual_seed(mix_seed(c.seed, self.step, self.dist.rank, 0xD120))
        images, labels = images.to(self.device, non_blocking=True), labels.to(self.device, non_blocking=True)
        if c.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        lr = self.schedule(self.step)
        for group in self.optimizer.param_groups:
            group["lr"] = lr * group["lr_scale"]
        logits = self.ddp(images)
        loss = self.criterion(logits, labels)
        stats = torch.tensor([loss.item() * len(labels), (logits.argmax(1) == labels).sum().item(), len(labels), 0],
                             dtype=torch.float64)
        distributed.all_reduce_sum(stats)
        if not math.isfinite(stats[0].item()):
            raise self._diverged(f"the training loss is {stats[0].item() / stats[2].item()}")
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        if self.ema is not None:
            self.ema.update(self.model)
        self.epoch_sums[:3] += stats[:3]
        return stats

    def _end_epoch(self, epoch: int, images: int, seconds: float) -> None:
        p = self.plan
        raw = evaluate(self.model, self.val_loader, device=self.device, channels_last=self.c.channels_last,
                       strict=self.c.strict)
        ema = (evaluate(self.ema.module, self.val_loader, device=self.device, channels_last=self.c.channels_last,
                        strict=self.c.strict) if self.ema else None)
        sums = distributed.all_reduce_sum(self.epoch_sums[3:].clone())  # skipped counts live per process
        skipped = int(sums[0].item())
        self.skipped_total += skipped
        s = self.epoch_sums
        row: dict[str, Any] = {
            "epoch": epoch + 1, "step": self.step, "epoch_float": round(self.step / p.steps_per_epoch, 4),
            "train_loss": s[0].item() / max(s[2].item(), 1), "train_acc": 100 * s[1].item() / max(s[2].item(), 1),
            "lr": self.schedule(self.step - 1), "val_top1": raw.top1, "val_top5": raw.top5, "val_loss": raw.loss,
        }
        if ema is not None:
            row.update(ema_top1=ema.top1, ema_top5=ema.top5, ema_loss=ema.loss)
        row.update(img_per_s=images * self.dist.world_size / max(seconds, 1e-9), epoch_s=seconds,
                   skipped_train=skipped, skipped_val=raw.skipped)
        score = ema.top1 if ema is not None else raw.top1
        is_best = score > self.best
        self.best = max(self.best, score)
        self.history.append(row)
        self.epoch_sums = torch.zeros(4, dtype=torch.float64)
        self._append("metrics.jsonl", row)
        self._log(f"epoch {epoch + 1} step {self.step}: train loss {row['train_loss']:.4f} acc "
                  f"{row['train_acc']:.2f}% | val top-1 {raw.top1:.2f}% top-5 {raw.top5:.2f}%"
                  + (f" | EMA top-1 {ema.top1:.2f}% top-5 {ema.top5:.2f}%" if ema else "")
                  + (f" | skipped {skipped} unreadable" if skipped else ""))
        self._save(best=is_best)
        distributed.barrier()

    # -- helpers -------------------------------------------------------------------------------------------------

    def _train_mode(self) -> None:
        self.model.train()
        if self.c.freeze_backbone:  # a frozen backbone keeps its BatchNorm statistics too
            for name, m in self.model.named_modules():
                if isinstance(m, nn.modules.batchnorm._BatchNorm) and not name.startswith("classifier"):
                    m.eval()

    def _diverged(self, what: str) -> TrainingDiverged:
        last = ckpt.latest_checkpoint(self.run_dir) if self.run_dir else None
        where = f"last good checkpoint: {last}" if last else "no checkpoint was written"
        return TrainingDiverged(
            f"{what} at step {self.step} (epoch {self.step // self.plan.steps_per_epoch + 1}, "
            f"lr {self.schedule(self.step):.3g}); stopped without saving this state; {where}; "
            "lower the learning rate (--lr) or check the data"
        )

    def _progress(self, epoch: int, done: int, total: int):
        if not (self.c.progress and self.main):
            return None
        from tqdm import tqdm

        epochs = math.ceil(self.plan.total_steps / self.plan.steps_per_epoch)
        return tqdm(total=total, initial=done, desc=f"epoch {epoch + 1}/{epochs}", unit="step",
                    dynamic_ncols=True, mininterval=1.0, leave=True)

    def _append(self, name: str, row: dict[str, Any]) -> None:
        if self.run_dir is None or not self.main:
            return
        with open(self.run_dir / name, "a") as f:
            f.write(json.dumps(row) + "\n")

    def _log(self, message: str) -> None:
        if self.main and self.c.progress:
            print(message, flush=True)

    def close(self) -> None:
        distributed.teardown()


def _truncate_jsonl(path: Path, step: int) -> None:
    """Drop lines written after `step` (by the run that was interrupted), so the files match an unbroken run."""
    if not path.is_file():
        return
    keep = [ln for ln in path.read_text().splitlines() if ln.strip() and json.loads(ln).get("step", 0) <= step]
    ckpt.atomic_write_text("".join(ln + "\n" for ln in keep), path)
