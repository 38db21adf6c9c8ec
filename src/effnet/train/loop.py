"""The training loop: `train(TrainConfig) -> TrainResult`, one process or many (torchrun).

Every batch is a function of (seed, step): the sampler's order of (seed, epoch), each sample's augmentation of
(seed, epoch, index), and dropout/drop-path masks of the global RNG re-seeded from (seed, step, rank) before each
step.  A checkpoint therefore needs only the step (plus model, EMA, optimizer and the epoch's running sums) to
continue exactly where it stopped; RNG states are saved as well, for anything outside the step.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from effnet.allocator import keep_freed_memory
from effnet.data import ResumableSampler
from effnet.data.batches import train_batches
from effnet.data.loader import mix_seed, seed_cpu
from effnet.data.sources import DataError
from effnet.errors import EffnetError
from effnet.registry import get_config, get_spec
from effnet.report import format_duration
from effnet.spec import NetSpec
from effnet.train import checkpoint as ckpt
from effnet.train import distributed
from effnet.train import run_folder as folder
from effnet.train.compiled import CompiledStep, compile_mode
from effnet.train.config import TrainConfig, check_config
from effnet.train.ema import ModelEma
from effnet.train.evaluate import EvalMetrics, _unreadable_error, eval_loader
from effnet.train.model import build_model, train_mode
from effnet.train.optim import make_optimizer, param_groups
from effnet.train.plan import make_plan, open_data
from effnet.train.progressive import Stage, stage_at, stage_end
from effnet.train.resume import check_recorded_settings, find_resume
from effnet.train.run_log import RunLog, summary_writer
from effnet.train.schedule import make_schedule
from effnet.train.validation import epoch_row, test_with, validate


class TrainingDiverged(EffnetError, RuntimeError):
    """The loss became NaN or infinite; the run stopped without writing the bad state.  `where`: what was not
    finite, at which step, epoch and learning rate."""

    def __init__(self, message: str, where: str = "") -> None:
        super().__init__(message)
        self.where = where or message


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
    compile_s: float | None = None  # the first compiled step's time, compiling included (None: eager)
    diverged: str | None = None  # with `diverged_as_result`: where and how the run diverged (it ended there)


def train(config: TrainConfig) -> TrainResult:
    """Run `config` to its budget and return the final metrics (the API the α/β/γ grid search calls).  It makes
    this process's glibc malloc keep freed memory for reuse (`effnet.allocator`; process-wide and for the rest of
    the process; `EFFNET_KEEP_FREED_MEMORY=0` leaves the allocator as it is)."""
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
        keep_freed_memory()  # the same activation-sized blocks every step: reuse them, not fault them in again
        if c.threads:
            torch.set_num_threads(c.threads)  # on a shared CPU, fewer threads than cores is often faster
        self.run_dir = Path(c.out_dir) if c.out_dir else None
        self.run_log: RunLog | None = None
        self._locked = False
        if c.tensorboard and distributed.env_rank() == 0:
            summary_writer()  # a missing extra is said before any work starts
        spec = get_spec(c.model)
        self.train_src, self.val_src, self.test_src = open_data(c)
        self._before: folder.FolderBefore | None = None  # set when this run claims an unoccupied folder
        try:
            self._setup(spec)
        except BaseException:
            if self._locked and self._before is not None:  # the run never started: leave no trace of it
                folder.abandon(self.run_dir, self._before)
                self._locked = False
            self.close()
            raise

    def _setup(self, spec: NetSpec) -> None:
        c = self.c
        check_recorded_settings(c, self.run_dir)  # before the lock: a refused resume writes nothing
        self._claim_folder()
        resume_state = find_resume(c, self.run_dir, main=distributed.env_rank() == 0)
        self.dist = distributed.setup(c.device)
        self.main = self.dist.is_main
        self.run_log = RunLog(c, self.run_dir, self.main)
        p = make_plan(c, spec, self.train_src, self.val_src, self.dist.world_size, self.test_src)
        self.plan = p = replace(p, compile=compile_mode(c, p.total_steps, resume_state))
        self.spec_name = spec.name
        self.schedule = replace(
            make_schedule(base_lr=p.base_lr, steps_per_epoch=p.steps_per_epoch, warmup_epochs=c.warmup_epochs,
                          decay_epochs=c.decay_epochs, decay_rate=c.decay_rate),
            warmup_steps=p.warmup_steps,
        )
        self.device = self.dist.device
        self.model = build_model(c, p, spec, resume_state, self.dist.device)
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
        self.step_fn = CompiledStep(self.ddp, enabled=self.plan.compile)
        self.compile_s: float | None = None
        self.stage: Stage | None = None  # the stage the training loader and dropout are set for (_enter_stage)
        self._enter_stage(stage_at(self.plan.stages, self.step))
        self.val_loader = self._eval_loader(self.val_src)
        self.run_log.open_events(self.step)

    # -- set-up ----------------------------------------------------------------------------------------------

    def _claim_folder(self) -> None:
        """One run per folder, one process per folder (rank 0 decides for all): refuse an occupied folder unless
        resuming or overwriting, lock it, and only then clear it (effnet.train.run_folder)."""
        c, d = self.c, self.run_dir
        if d is None or distributed.env_rank() != 0:
            return
        if not (c.resume or c.overwrite):
            folder.refuse_if_occupied(d)  # before the lock: a refused run writes nothing
        self._before = None if folder.is_occupied(d) else folder.FolderBefore.of(d)
        folder.acquire(d)
        self._locked = True
        if c.overwrite:
            folder.overwrite(d)
        elif not c.resume:
            folder.refuse_if_occupied(d)  # again under the lock: another run may have started meanwhile

    def _model_config(self):
        p = self.plan
        cfg = get_config(self.model.spec, p.resolution)
        return replace(cfg, crop_fraction=p.eval_crop_fraction, mean=p.mean, std=p.std)

    def _eval_loader(self, source):
        p = self.plan
        return eval_loader(source, self._model_config(), batch_size=max(p.per_rank_batch, 64), workers=self.c.workers,
                           crop_fraction=p.eval_crop_fraction, rank=self.dist.rank, world_size=self.dist.world_size,
                           batched=self.c.batched_data)

    def _train_loader(self, stage: Stage) -> tuple[Any, ResumableSampler]:
        """The training batches of `stage` (its image size and RandAugment magnitude; whichever path
        `effnet.data.batches` takes) and their resumable sampler."""
        c = self.c
        return train_batches(self.train_src, replace(self._model_config(), resolution=stage.size),
                             batch_size=self.plan.per_rank_batch, seed=c.seed, rank=self.dist.rank,
                             world_size=self.dist.world_size, workers=c.workers, augment=c.augment,
                             randaugment_n=c.randaugment_n, randaugment_m=stage.randaugment_m,
                             crop_scale=tuple(c.crop_scale), hflip=c.hflip, batched=c.batched_data)

    def _enter_stage(self, stage: Stage) -> None:
        """Train as `stage` says from now on: its image size and RandAugment magnitude (a new training loader), its
        classifier dropout (mixup is applied per step, in `_step`).  Weights, optimizer and EMA carry over."""
        if stage == self.stage:
            return
        if self.stage is not None:
            self.run_log.say(f"stage {stage.index + 1}/{len(self.plan.stages)} from step {self.step}: {stage.size} "
                             f"px, dropout {stage.dropout:g}, RandAugment m={stage.randaugment_m}, mixup "
                             f"{stage.mixup:g}")
        self.train_loader, self.sampler = self._train_loader(stage)
        if self.c.progressive is not None and isinstance(getattr(self.model, "dropout", None), nn.Dropout):
            self.model.dropout.p = stage.dropout
        self.stage = stage

    def _batches(self, epoch: int, end: int):
        """This epoch's batches from the current step until step `end`, each from the loader of the stage that
        trains it (a stage boundary inside the epoch switches loaders at the same position in the epoch's order)."""
        p = self.plan
        while self.step < end:
            self._enter_stage(stage_at(p.stages, self.step))
            last = min(end, stage_end(p.stages, self.stage, p.total_steps))
            self.sampler.set_position(epoch, (self.step - epoch * p.steps_per_epoch) * p.per_rank_batch)
            for batch in self.train_loader:
                yield batch
                if self.step >= last:
                    break
            else:
                return  # the epoch's batches ran out

    # -- checkpoint state --------------------------------------------------------------------------------------

    def _state(self) -> dict[str, Any]:
        cfg = self._model_config()
        about = {"spec": self.model.spec.to_dict(), "classes": list(self.train_src.classes),
                 "compiled": self.step_fn.enabled,
                 "preprocess": {"resolution": cfg.resolution, "crop_fraction": cfg.crop_fraction,
                                "interpolation": cfg.interpolation, "mean": tuple(cfg.mean), "std": tuple(cfg.std)},
                 "config": self.c.to_dict()}
        progress = {"step": self.step, "epoch_sums": self.epoch_sums.clone(), "best": self.best,
                    "best_step": self.best_step, "skipped_total": self.skipped_total, "history": list(self.history)}
        return ckpt.training_state(self.model, self.ema, self.optimizer, about=about, progress=progress)

    def _restore(self, state: dict[str, Any]) -> None:
        p = ckpt.restore_training_state(state, self.model, self.ema, self.optimizer)
        self.step, self.epoch_sums, self.best = p["step"], p["epoch_sums"], p["best"]
        self.best_step, self.skipped_total, self.history = p["best_step"], p["skipped_total"], p["history"]
        self.best_weights = ckpt.best_weights(self.run_dir, self.best_step, ema=self.ema is not None)
        self.run_log.say(f"resumed from {state['path']} at step {self.step}")

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
        self.run_log.update_record(self.best, steps_done=self.step)

    # -- the loop ------------------------------------------------------------------------------------------------

    def fit(self) -> TrainResult:
        p = self.plan
        self.run_log.start(p, self.spec_name, self.step)
        start, images, first_step = time.perf_counter(), 0, self.step
        try:
            while self.step < p.total_steps:
                images += self._run_epoch()
            wall = time.perf_counter() - start
            distributed.barrier()
            test = self._test()
        except TrainingDiverged as diverged:
            self.run_log.end_record("diverged", self.best, self.step)
            if not self.c.diverged_as_result or self.best_weights is None or p.world_size > 1:
                raise
            wall = time.perf_counter() - start
            self.run_log.warn(f"{diverged.where}: the run ends there, with the weights validation chose at step "
                              f"{self.best_step}, tested once")
            images = (self.step - first_step) * p.per_rank_batch  # the steps done, the diverging epoch's too
            return self._result(wall, images, self._test(), diverged=diverged.where)
        except BaseException:
            self.run_log.end_record("interrupted", self.best, self.step)
            raise
        self.run_log.end_record("finished", self.best, self.step)
        if self.skipped_total:
            self.run_log.warn(f"skipped {self.skipped_total} unreadable image(s) in training (see metrics.jsonl)")
        return self._result(wall, images, test)

    def _result(self, wall: float, images: int, test: EvalMetrics | None, diverged: str | None = None) -> TrainResult:
        p, last = self.plan, self.history[-1] if self.history else {}
        return TrainResult(
            top1=last.get("val_top1", float("nan")), top5=last.get("val_top5", float("nan")),
            ema_top1=last.get("ema_top1"), ema_top5=last.get("ema_top5"), val_loss=last.get("val_loss", float("nan")),
            train_loss=last.get("train_loss", float("nan")), train_acc=last.get("train_acc", float("nan")),
            best_top1=self.best, epochs=self.step / p.steps_per_epoch, steps=self.step, wall_s=wall,
            images_per_s=images / wall if wall > 0 else 0.0, skipped_images=self.skipped_total,
            run_dir=str(self.run_dir) if self.run_dir else None, history=tuple(self.history),
            selected_step=self.best_step, selected_weights=self._selected_kind(),
            test_top1=test.top1 if test else None, test_top5=test.top5 if test else None,
            test_images=test.images if test else 0, compile_s=self.compile_s, diverged=diverged,
        )

    def _selected_kind(self) -> str:
        return "ema" if self.ema is not None else "raw"

    def _chosen_module(self) -> nn.Module:
        """The module whose weights validation scores and chooses: the EMA's when kept."""
        return self.ema.module if self.ema is not None else self.model

    def _test(self) -> EvalMetrics | None:
        """The chosen weights (best validation score) on the test split: once, after training, only reported."""
        if self.test_src is None or not self.c.test or self.best_weights is None:
            return None
        metrics = test_with(self._chosen_module(), self.best_weights, self._eval_loader(self.test_src),
                            device=self.device, channels_last=self.c.channels_last, strict=self.c.strict)
        self.run_log.test(metrics, split=self.test_src.name, selected_step=self.best_step,
                          selected_weights=self._selected_kind(), val_top1=self.best)
        return metrics

    def _run_epoch(self) -> int:
        c, p = self.c, self.plan
        epoch, offset = divmod(self.step, p.steps_per_epoch)
        end = min((epoch + 1) * p.steps_per_epoch, p.total_steps)
        train_mode(self.model, self.c.freeze_backbone)
        bar = self.run_log.progress(p, epoch, offset, end - epoch * p.steps_per_epoch)
        t0, images, window = time.perf_counter(), 0, torch.zeros(3, dtype=torch.float64)
        for images_b, labels, skipped in self._batches(epoch, end):
            stats = self._step(images_b, labels, skipped)
            images += int(stats[2].item())
            window += stats[:3]
            self.step += 1
            rate = images / max(time.perf_counter() - t0, 1e-9)
            if bar is not None:
                s = self.epoch_sums
                per_step = (time.perf_counter() - t0) / (self.step - epoch * p.steps_per_epoch - offset)
                bar.update(1)
                bar.set_postfix(loss=f"{s[0] / max(s[2], 1):.4f}", acc=f"{100 * s[1] / max(s[2], 1):.2f}%",
                                img_s=f"{rate:.0f}", lr=f"{self.schedule(self.step - 1):.2e}",
                                # the whole run's training steps left at this epoch's rate (validation not counted)
                                run_eta=format_duration(per_step * (p.total_steps - self.step)), refresh=False)
            if self.step % c.log_every == 0:
                line = {"step": self.step, "epoch": self.step / p.steps_per_epoch,
                        "loss": window[0].item() / max(window[2].item(), 1),
                        "acc": 100 * window[1].item() / max(window[2].item(), 1),
                        "lr": self.schedule(self.step - 1), "img_per_s": rate}
                self.run_log.append("steps.jsonl", line)
                self.run_log.scalars(self.step, {f"train/{k}": line[k] for k in ("loss", "acc", "lr", "img_per_s")})
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
        step_seed = mix_seed(c.seed, self.step, self.dist.rank, 0xD120)  # dropout and drop-path masks
        mixed = self.stage.mixup > 0
        if mixed:  # soft targets for the loss; accuracy stays on the true labels
            images, targets = self._mixup(images, labels)
        images, labels = images.to(self.device, non_blocking=True), labels.to(self.device, non_blocking=True)
        targets = targets.to(self.device, non_blocking=True) if mixed else labels
        if c.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        lr = self.schedule(self.step)
        for group in self.optimizer.param_groups:
            group["lr"] = lr * group["lr_scale"]

        def before() -> None:
            self.optimizer.zero_grad(set_to_none=True)
            if self.device.type == "cuda":
                torch.manual_seed(step_seed)
            else:
                seed_cpu(step_seed)

        logits, loss = self.step_fn(images, lambda out: self.criterion(out, targets), before)
        if self.step_fn.compile_s is not None and self.compile_s is None:
            self._compiled_in(self.step_fn.compile_s)
        stats = torch.tensor([loss.item() * len(labels), (logits.argmax(1) == labels).sum().item(), len(labels), 0],
                             dtype=torch.float64)
        distributed.all_reduce_sum(stats)
        if not math.isfinite(stats[0].item()):
            raise self._diverged(f"the training loss is {stats[0].item() / stats[2].item()}")
        self.optimizer.step()
        if self.ema is not None:
            self.ema.update(self.model)
        self.epoch_sums[:3] += stats[:3]
        return stats

    def _mixup(self, images: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """torchvision's MixUp with the stage's alpha on the batch, its draw seeded from (seed, step, rank) so
        that a resumed run mixes as the uninterrupted one did; labels become mixed one-hot targets."""
        from torchvision.transforms import v2

        with torch.random.fork_rng(devices=[]):
            seed_cpu(mix_seed(self.c.seed, self.step, self.dist.rank, 0x313C))
            return v2.MixUp(alpha=self.stage.mixup, num_classes=self.plan.num_classes)(images, labels)

    def _end_epoch(self, epoch: int, images: int, seconds: float) -> None:
        raw, ema = validate(self.model, self.ema.module if self.ema else None, self.val_loader, device=self.device,
                            channels_last=self.c.channels_last, strict=self.c.strict)
        sums = distributed.all_reduce_sum(self.epoch_sums[3:].clone())  # skipped counts live per process
        skipped = int(sums[0].item())
        self.skipped_total += skipped
        row = epoch_row(epoch, self.step, self.plan.steps_per_epoch, self.epoch_sums, self.schedule(self.step - 1),
                        raw, ema, images_per_s=images * self.dist.world_size / max(seconds, 1e-9), seconds=seconds,
                        skipped=skipped)
        score = ema.top1 if ema is not None else raw.top1
        is_best = score > self.best
        self.best = max(self.best, score)
        if is_best:
            self.best_step = self.step
            if self.test_src is not None and self.c.test:
                self.best_weights = {k: v.detach().clone() for k, v in self._chosen_module().state_dict().items()}
        self.history.append(row)
        self.epoch_sums = torch.zeros(4, dtype=torch.float64)
        self.run_log.epoch(row, raw, ema)
        self._save(best=is_best)
        distributed.barrier()

    # -- helpers -------------------------------------------------------------------------------------------------

    def _compiled_in(self, seconds: float) -> None:
        """The first compiled step's time (compiling included): said, and kept in the run record."""
        self.compile_s = seconds
        self.run_log.say(f"compiled the training step in {seconds:.1f}s (its first step, compiling included)")
        self.run_log.update_record(self.best, compile_s=round(seconds, 2))

    def _diverged(self, what: str) -> TrainingDiverged:
        last = ckpt.latest_checkpoint(self.run_dir) if self.run_dir else None
        where = f"last good checkpoint: {last}" if last else "no checkpoint was written"
        at = (f"{what} at step {self.step} (epoch {self.step // self.plan.steps_per_epoch + 1}, "
              f"lr {self.schedule(self.step):.3g})")
        return TrainingDiverged(f"{at}; stopped without saving this state; {where}; lower the learning rate (--lr) or "
                                "check the data", where=at)

    def close(self) -> None:
        if self.run_log is not None:
            self.run_log.close()
        if self._locked:
            folder.release(self.run_dir)
            self._locked = False
        distributed.teardown()

