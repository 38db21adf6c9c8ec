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
import warnings
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
from effnet.train import run_folder as folder
from effnet.train.config import RESUME_KEYS, ConfigError, TrainConfig, check_config, recipe_lines
from effnet.train.ema import ModelEma
from effnet.train.evaluate import EvalMetrics, _unreadable_error, eval_loader, evaluate
from effnet.train.optim import make_optimizer, param_groups
from effnet.train.plan import make_plan, open_data
from effnet.train.schedule import make_schedule


class TrainingDiverged(EffnetError, RuntimeError):
    """The loss became NaN or infinite; the run stopped without writing the bad state."""


@dataclass(frozen=True)
class TrainResult:
    """Final metrics of a run, plus the per-epoch history as written to metrics.jsonl.

    `top1`… are the last epoch's validation metrics (percent) and `best_top1` the best validation score (EMA
    weights if kept, else raw), which chooses the weights (`selected_step`, `selected_weights`).  `test_top1` and
    `test_top5` are those chosen weights on the test split, evaluated once after training (None without a
    holdout, or with `test=False`)."""

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
    selected_step: int | None = None
    selected_weights: str | None = None
    test_top1: float | None = None
    test_top5: float | None = None
    test_images: int = 0


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
        self.events = None
        self.record: dict[str, Any] | None = None  # the run record (run.json), kept current by rank 0
        self._locked = False
        if c.tensorboard and distributed.env_rank() == 0:
            _summary_writer()  # a missing extra is said before any work starts
        spec = get_spec(c.model)
        self.train_src, self.val_src, self.test_src = open_data(c)
        try:
            self._setup(spec)
        except BaseException:
            self.close()
            raise

    def _setup(self, spec: NetSpec) -> None:
        c = self.c
        self._check_recorded_settings()  # before the lock: a refused resume writes nothing
        self._claim_folder()
        resume_state = self._find_resume()
        self.dist = distributed.setup(c.device)
        self.main = self.dist.is_main
        self.plan = p = make_plan(c, spec, self.train_src, self.val_src, self.dist.world_size, self.test_src)
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
        self.best_step: int | None = None
        self.best_weights: dict[str, torch.Tensor] | None = None  # the chosen module's state, for the test split
        self.epoch_sums = torch.zeros(4, dtype=torch.float64)  # loss·n, correct, n, skipped
        self.skipped_total = 0
        if resume_state is not None:
            self._restore(resume_state)
        self.ddp = (DistributedDataParallel(self.model, device_ids=[self.device.index] if self.device.type == "cuda"
                                            else None) if self.dist.distributed else self.model)
        self.train_loader, self.sampler = self._train_loader()
        self.val_loader = self._eval_loader(self.val_src)
        self.events = self._open_events()

    # -- set-up ----------------------------------------------------------------------------------------------

    def _claim_folder(self) -> None:
        """One run per folder, one process per folder (rank 0 decides for all): refuse an occupied folder unless
        resuming or overwriting, lock it, and only then clear it (effnet.train.run_folder)."""
        c, d = self.c, self.run_dir
        if d is None or distributed.env_rank() != 0:
            return
        if not (c.resume or c.overwrite):
            folder.refuse_if_occupied(d)  # before the lock: a refused run writes nothing
        folder.acquire(d)
        self._locked = True
        if c.overwrite:
            folder.overwrite(d)
        elif not c.resume:
            folder.refuse_if_occupied(d)  # again under the lock: another run may have started meanwhile

    def _check_recorded_settings(self) -> None:
        """Resuming a run folder: the settings must be those it records (run.json, or an older run's config.json)."""
        if self.c.resume is not True or self.run_dir is None:
            return
        recorded = folder.run_settings(self.run_dir, RESUME_KEYS)
        changes = folder.setting_changes(recorded or {}, folder.settings_of(self.c.to_dict(), RESUME_KEYS))
        if changes:
            raise ConfigError(f"{self.run_dir}: cannot resume with different settings ({', '.join(changes)}); "
                              "rerun the original command with --resume, or use another --out")

    def _find_resume(self) -> dict[str, Any] | None:
        """The state to continue from: a named checkpoint, or the run folder's newest good step checkpoint
        (damaged ones renamed aside); None to start from the beginning (no checkpoint yet)."""
        c = self.c
        if not c.resume:
            return None
        now = folder.settings_of(c.to_dict(), RESUME_KEYS)
        if isinstance(c.resume, str):
            state = ckpt.load_checkpoint(c.resume)
        else:
            if self.run_dir is None:
                raise ConfigError("resume: got True without out_dir; expected the run folder to resume (--out)")
            main = distributed.env_rank() == 0
            if main:
                ckpt.remove_stale_temporaries(ckpt.checkpoint_dir(self.run_dir))
            state = folder.choose_checkpoint(self.run_dir, RESUME_KEYS, rename=main)
            if state is None:
                return None  # nothing saved yet: start from the beginning
        changes = folder.setting_changes(folder.settings_of(state.get("config", {}), RESUME_KEYS), now)
        if changes:
            raise ConfigError(f"{state['path']}: cannot resume with different settings ({', '.join(changes)}); "
                              "rerun the original command with --resume")
        return state

    def _open_events(self):
        """TensorBoard's writer into the run folder (`tensorboard=True`); events after a resumed step are purged,
        as the jsonl files are truncated."""
        if not (self.c.tensorboard and self.main and self.run_dir is not None):
            return None
        return _summary_writer()(log_dir=str(self.run_dir), purge_step=self.step + 1)

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

    def _eval_loader(self, source) -> DataLoader:
        p = self.plan
        return eval_loader(source, self._model_config(), batch_size=max(p.per_rank_batch, 64), workers=self.c.workers,
                           crop_fraction=p.eval_crop_fraction, rank=self.dist.rank, world_size=self.dist.world_size)

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
            "best_step": self.best_step,
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
        self.best_step = state.get("best_step")
        self.best_weights = self._saved_best_weights()
        self.skipped_total = int(state["skipped_total"])
        self.history = list(state["history"])
        rng = state["rng"]
        torch.set_rng_state(rng["torch"])
        random.setstate((rng["python_version"], tuple(rng["python"]), rng["python_gauss"]))
        n = rng["numpy"]
        np.random.set_state((n[0], n[1].numpy().astype(np.uint32), *n[2:]))
        self._log(f"resumed from {state['path']} at step {self.step}")

    def _save(self, best: bool = False) -> None:
        if self.run_dir is None or not self.main:
            return
        for t in self.model.parameters():
            if not torch.isfinite(t).all():
                raise self._diverged("a weight is not finite")
        state = self._state()
        try:
            ckpt.save_step_checkpoint(self.run_dir, state, self.step, self.c.keep_last)
            if best:
                ckpt.save_best(self.run_dir, state)
        except (OSError, RuntimeError) as exc:  # torch's zip writer reports a failed write as a RuntimeError
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc).splitlines()[0]
            raise folder.RunFolderError(
                f"{ckpt.checkpoint_dir(self.run_dir)}: cannot write the checkpoint of step {self.step} ({reason}); "
                "the earlier checkpoints are intact: free space, then rerun with --resume") from None
        self._update_record(steps_done=self.step)

    def _start_record(self) -> None:
        c, p = self.c, self.plan
        previous = folder.read_record(self.run_dir) if self.step else None
        self.record = folder.new_record(model=self.spec_name, data=c.data,
                                        settings=folder.settings_of(c.to_dict(), RESUME_KEYS), seed=c.seed,
                                        total_steps=p.total_steps, previous=previous)
        self.record["steps_done"] = self.step
        folder.write_record(self.run_dir, self.record)

    def _update_record(self, **fields: Any) -> None:
        if self.record is None:
            return
        best = self.best if math.isfinite(self.best) else None
        self.record.update(best_val_top1=best, updated=folder.now(), **fields)
        folder.write_record(self.run_dir, self.record)

    # -- the loop ------------------------------------------------------------------------------------------------

    def fit(self) -> TrainResult:
        c, p = self.c, self.plan
        if self.main and self.run_dir is not None:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            ckpt.remove_stale_temporaries(ckpt.checkpoint_dir(self.run_dir))
            lines = recipe_lines(c, p, self.spec_name)
            (self.run_dir / "recipe.txt").write_text("".join(f"{k:20s} {v}\n" for k, v in lines))
            (self.run_dir / "config.json").write_text(json.dumps(c.to_dict(), indent=2) + "\n")
            for name in ("metrics.jsonl", "steps.jsonl"):  # lines after the resumed step, and a torn last line
                folder.repair_jsonl(self.run_dir / name, self.step)
            self._start_record()
        start, images = time.perf_counter(), 0
        try:
            while self.step < p.total_steps:
                images += self._run_epoch()
            wall = time.perf_counter() - start
            distributed.barrier()
            test = self._test()
        except TrainingDiverged:
            self._end_record("diverged")
            raise
        except BaseException:
            self._end_record("interrupted")
            raise
        self._end_record("finished")
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
            selected_step=self.best_step, selected_weights=self._selected_kind(),
            test_top1=test.top1 if test else None, test_top5=test.top5 if test else None,
            test_images=test.images if test else 0,
        )

    def _end_record(self, state: str) -> None:
        """The run's final state; steps done stay the last checkpoint's unless it finished."""
        try:
            self._update_record(state=state, **({"steps_done": self.step} if state == "finished" else {}))
        except OSError:
            pass  # a full disk must not hide the error that ended the run

    def _selected_kind(self) -> str:
        return "ema" if self.ema is not None else "raw"

    def _saved_best_weights(self) -> dict[str, torch.Tensor] | None:
        """The chosen module's weights from the run folder's best.pt (after a resume).  A best.pt of a later step
        than the resumed run's best (written after the checkpoint resumed from) is not used: the continued run,
        bit-identical, reaches that step again and chooses it again."""
        path = ckpt.checkpoint_dir(self.run_dir) / "best.pt" if self.run_dir else None
        if path is None or not path.is_file():
            return None
        try:
            state = ckpt.load_checkpoint(path)
        except ckpt.CheckpointError as exc:
            warnings.warn(f"{exc}; the test split is evaluated only if a later epoch scores better", stacklevel=2)
            return None
        if state.get("step") != self.best_step:
            return None
        return state["ema"]["model"] if self.ema is not None and state.get("ema") else state["model"]

    def _test(self) -> EvalMetrics | None:
        """The chosen weights (best validation score) on the test split: once, after training, only reported."""
        if self.test_src is None or not self.c.test or self.best_weights is None:
            return None
        module = self.ema.module if self.ema is not None else self.model
        current = {k: v.detach().clone() for k, v in module.state_dict().items()}
        module.load_state_dict(self.best_weights)
        try:
            metrics = evaluate(module, self._eval_loader(self.test_src), device=self.device,
                               channels_last=self.c.channels_last, strict=self.c.strict)
        finally:
            module.load_state_dict(current)
        if self.main and self.run_dir is not None:
            record = {"top1": metrics.top1, "top5": metrics.top5, "loss": metrics.loss, "images": metrics.images,
                      "split": self.test_src.name, "selected_step": self.best_step,
                      "selected_weights": self._selected_kind(), "val_top1": self.best}
            ckpt.atomic_write_text(json.dumps(record, indent=2) + "\n", self.run_dir / "test.json")
        self._log(f"test top-1 {metrics.top1:.2f}% top-5 {metrics.top5:.2f}% ({metrics.images} images, "
                  f"{self._selected_kind()} weights of step {self.best_step}, chosen on validation)")
        return metrics

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
                line = {"step": self.step, "epoch": self.step / p.steps_per_epoch,
                        "loss": window[0].item() / max(window[2].item(), 1),
                        "acc": 100 * window[1].item() / max(window[2].item(), 1),
                        "lr": self.schedule(self.step - 1), "img_per_s": rate}
                self._append("steps.jsonl", line)
                self._scalars(self.step, {f"train/{k}": line[k] for k in ("loss", "acc", "lr", "img_per_s")})
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
        if is_best:
            self.best_step = self.step
            if self.test_src is not None and self.c.test:
                module = self.ema.module if self.ema is not None else self.model
                self.best_weights = {k: v.detach().clone() for k, v in module.state_dict().items()}
        self.history.append(row)
        self.epoch_sums = torch.zeros(4, dtype=torch.float64)
        self._append("metrics.jsonl", row)
        self._scalars(self.step, {"val/top1": raw.top1, "val/top5": raw.top5, "val/loss": raw.loss,
                                  "epoch/train_loss": row["train_loss"], "epoch/train_acc": row["train_acc"],
                                  **({"ema/top1": ema.top1, "ema/top5": ema.top5, "ema/loss": ema.loss}
                                     if ema is not None else {})})
        if self.events is not None:
            self.events.flush()
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

    def _scalars(self, step: int, values: dict[str, float]) -> None:
        if self.events is not None:
            for tag, value in values.items():
                self.events.add_scalar(tag, value, step)

    def _log(self, message: str) -> None:
        if self.main and self.c.progress:
            print(message, flush=True)

    def close(self) -> None:
        if self.events is not None:
            self.events.close()
            self.events = None
        if self._locked:
            folder.release(self.run_dir)
            self._locked = False
        distributed.teardown()


def _summary_writer():
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise ConfigError("tensorboard: the tensorboard package is not installed; install the extra: "
                          "pip install 'effnet[tensorboard]'") from None
    return SummaryWriter
