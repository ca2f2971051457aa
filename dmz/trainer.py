"""The one Trainer, for every prior, conditioning method and dataset (its CLI: ``python -m dmz.train``).

Determinism: every random number of step ``s`` (batch indices, flips, timesteps, noise, input perturbation, the
prior's Gumbel/Gaussian noise) is drawn for the *global* batch from generators seeded by ``(seed, s)``, and each DDP
process takes its slice. So a run is repeatable, a resumed run continues exactly, and k processes equal one process
on the same global batch (dropout aside: it uses the per-process torch RNG, whose state is checkpointed).
With ``train.seeding=crn`` (:mod:`dmz.seeding`) each purpose has its own generator and each module's initial weights
their own, so two arms of one seed share every draw they have in common.
"""

from __future__ import annotations

import copy
import math
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

import dmz
from dmz.accel import amp_dtype, autocast, precision_name
from dmz.config import EXECUTION_FIELDS, LATER_FIELDS, Config, ConfigError
from dmz.data import build_dataset, from_uint8
from dmz.diffusion import create_named_schedule_sampler
from dmz.distributed import all_reduce_mean, barrier, init_distributed
from dmz.model import DMZModel, build_diffusion, build_model
from dmz.runio import (CHECKPOINT, CONFIG, METRICS, append_jsonl, atomic_write_json, load_checkpoint,
                       save_checkpoint)
from dmz.seeding import derive, init_by_name
from dmz.seeding import generator as seed_generator
from dmz.sampling import sample_grid
from dmz.tblog import RunLogger
from dmz.threads import limit_threads

# fields that may differ between the run that wrote a checkpoint and the one that resumes it
RUNTIME_FIELDS = {"train.steps", *EXECUTION_FIELDS}


class NonFiniteLossError(RuntimeError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""


class DiffusionLoss(nn.Module):
    """One forward = the whole training loss (prior + denoiser), so DDP sees a single forward per step (and
    ``train.compile`` one graph)."""

    def __init__(self, model: DMZModel, diffusion):
        super().__init__()
        self.model = model
        self.diffusion = diffusion

    def forward(self, x0, t, noise, perturbation, prior_noise):
        out = self.model.latent(x0, noise=prior_noise)
        kwargs = {} if out.cond is None else {"cond": out.cond}
        losses = self.diffusion.training_losses(self.model, x0, t, model_kwargs=kwargs, noise=noise,
                                                perturbation=perturbation)
        return losses, out.aux_loss, out.stats


def fused_adamw_supported(device: torch.device) -> bool:
    """AdamW's fused kernel (one kernel for every parameter; torch >= 2.4 has it on CPU too)."""
    return device.type in ("cuda", "cpu")


class StepMeter:
    """The numbers a training step logs, summed on the device between log steps (no host sync per step), and the
    first step whose loss was not finite."""

    def __init__(self, device: torch.device):
        self.device = device
        self.sums: dict[str, torch.Tensor] = {}
        self.count = 0
        self._bad_step = torch.full((), -1, dtype=torch.long, device=device)
        self._bad_value = torch.zeros((), dtype=torch.float32, device=device)
        self.bad_value: float | None = None

    def add(self, vals: dict[str, torch.Tensor], step: int) -> None:
        for k, v in vals.items():
            v = v.detach().float() if torch.is_tensor(v) else torch.tensor(float(v), device=self.device)
            self.sums[k] = self.sums[k] + v if k in self.sums else v.clone()
        self.count += 1
        loss = vals["loss"].detach().float()
        new_bad = (self._bad_step < 0) & ~torch.isfinite(loss)
        self._bad_step = torch.where(new_bad, torch.full_like(self._bad_step, step), self._bad_step)
        self._bad_value = torch.where(new_bad, loss, self._bad_value)

    def first_bad_step(self) -> int | None:
        """The first step with a non-finite loss on any process since the meter was made, or None (a sync)."""
        bad = self._bad_step.clone()
        if dist.is_initialized() and dist.get_world_size() > 1:
            dist.all_reduce(bad, op=dist.ReduceOp.MAX)
        bad = int(bad)
        if bad < 0:
            return None
        self.bad_value = float(self._bad_value)
        return bad

    def means(self) -> dict[str, float]:
        """Means since the last call (the loss averaged over processes too), then reset."""
        if not self.count:
            return {}
        names = list(self.sums)
        vals = torch.stack([self.sums[k] for k in names]) / self.count
        vals[names.index("loss")] = all_reduce_mean(vals[names.index("loss")])
        out = dict(zip(names, vals.tolist()))
        self.sums, self.count = {}, 0
        return out


def _diff_config(a: dict, b: dict, prefix: str = "") -> list[str]:
    """Keys whose values differ, less the runtime fields and a field added later (``LATER_FIELDS``) that one side
    lacks (written before the field existed) while the other holds its default: the same config."""
    keys = []
    for k in sorted(set(a) | set(b)):
        va, vb = a.get(k), b.get(k)
        name = f"{prefix}{k}"
        if isinstance(va, dict) and isinstance(vb, dict):
            keys += _diff_config(va, vb, name + ".")
        elif va != vb and name not in RUNTIME_FIELDS:
            if name in LATER_FIELDS and (k not in a or k not in b) and (va if k in a else vb) == LATER_FIELDS[name]:
                continue
            keys.append(name)
    return keys


class Trainer:
    """:param cfg: the resolved config. :param out_dir: the run folder (created; resumed when it holds a checkpoint).
    :param progress: show a tqdm bar on the main process."""

    def __init__(self, cfg: Config, out_dir: str | os.PathLike, *, progress: bool = True):
        self.cfg = cfg
        self.out = Path(out_dir)
        self.progress = progress
        self.dist, self.device = init_distributed(cfg.train.device)
        if cfg.train.threads > 0:
            limit_threads(cfg.train.threads)
        tc = cfg.train
        if tc.batch_size % self.dist.world_size:
            raise ConfigError(f"train.batch_size={tc.batch_size} is not divisible by the {self.dist.world_size} processes")
        self.local_batch = tc.batch_size // self.dist.world_size

        d = cfg.data
        self.dataset = build_dataset(d.dataset, "train", root=d.data_root, resolution=d.resolution,
                                     flip=False, center_crop=d.center_crop, download=d.download)
        self.crn = tc.seeding == "crn"
        torch.manual_seed(tc.seed)  # parameter initialisation (v1; crn re-draws each module from its own generator)
        self.model = build_model(cfg)
        if self.crn:
            uncovered = init_by_name(self.model, tc.seed)
            if uncovered:
                self._say(f"seeding=crn: {len(uncovered)} module(s) without reset_parameters keep the builder's "
                          f"init ({', '.join(uncovered[:3])}{', ...' if len(uncovered) > 3 else ''})")
        if tc.init_from:
            self._init_from(tc)
        self.model = self.model.to(self.device)
        self.ema = copy.deepcopy(self.model).requires_grad_(False).eval()
        self.diffusion = build_diffusion(cfg)
        self.t_sampler = create_named_schedule_sampler(cfg.diffusion.schedule_sampler, self.diffusion).to(self.device)

        cuda = self.device.type == "cuda"
        self.amp_dtype, why = amp_dtype(tc.precision, self.device)
        if why:
            self._say(why)
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp_dtype == torch.float16)
        self.opt = torch.optim.AdamW(self.model.parameters(), lr=tc.lr, weight_decay=tc.weight_decay,
                                     fused=fused_adamw_supported(self.device))
        self.loss_module: nn.Module = DiffusionLoss(self.model, self.diffusion)
        if self.dist.enabled:
            self.loss_module = nn.parallel.DistributedDataParallel(
                self.loss_module, device_ids=[self.device.index] if cuda else None)
        # train.compile: the whole loss (prior, UNet, hybrid loss) as one graph, forward and backward
        self.step_module = torch.compile(self.loss_module) if tc.compile else self.loss_module
        self.meter = StepMeter(self.device)
        self.step = 0
        self._perm_cache: tuple[int, torch.Tensor] | None = None
        self._loader_iter = None

    # -- helpers ------------------------------------------------------------------------------------------------
    def _init_from(self, tc) -> None:
        """The UNet's pretrained start (:mod:`dmz.finetune`), copied on every start of the process (a resume then
        loads the checkpoint over it, and ``finetune=new`` freezes the same copied tensors again)."""
        from dmz.finetune import INIT_REPORT, freeze_copied, init_unet_from, summary

        report = init_unet_from(self.model, tc.init_from)
        self._say(summary(report))
        if tc.finetune == "new":
            n = freeze_copied(self.model, report)
            self._say(f"finetune=new: {n} copied UNet parameters frozen; the fresh ones and the encoder train")
        if self.dist.is_main:
            self.out.mkdir(parents=True, exist_ok=True)
            atomic_write_json(self.out / INIT_REPORT, {**report, "finetune": tc.finetune})

    def _say(self, msg: str) -> None:
        if self.dist.is_main:
            print(f"[dmz.train] {msg}", file=sys.stderr, flush=True)

    def _permutation(self, epoch: int) -> torch.Tensor:
        if self._perm_cache is None or self._perm_cache[0] != epoch:
            g = (seed_generator(self.cfg.train.seed, "data", epoch) if self.crn
                 else torch.Generator().manual_seed(self.cfg.train.seed * 1_000_003 + epoch))
            self._perm_cache = (epoch, torch.randperm(len(self.dataset), generator=g))
        return self._perm_cache[1]

    def global_batch_indices(self, step: int) -> torch.Tensor:
        """Dataset indices of step ``step``'s global batch: consecutive slices of per-epoch permutations."""
        n, b = len(self.dataset), self.cfg.train.batch_size
        pos, out = step * b, []
        while b > 0:
            epoch, offset = divmod(pos, n)
            take = min(b, n - offset)
            out.append(self._permutation(epoch)[offset:offset + take])
            pos, b = pos + take, b - take
        return torch.cat(out)

    def _load_images(self, idx: torch.Tensor) -> torch.Tensor:
        ds = self.dataset
        if getattr(ds, "images_uint8", None) is not None:
            return from_uint8(ds.images_uint8[idx])
        if hasattr(ds, "images"):
            return ds.images[idx]
        return torch.stack([ds[int(i)][0] for i in idx])  # on-disk datasets (celeba64): see batches

    def batches(self):
        """Yields the local batch of every step from self.step on (a DataLoader for on-disk datasets)."""
        sl = slice(self.dist.rank * self.local_batch, (self.dist.rank + 1) * self.local_batch)
        if hasattr(self.dataset, "images"):
            step = self.step
            while True:
                yield self._load_images(self.global_batch_indices(step)[sl])
                step += 1
        trainer = self

        class _StepSampler(torch.utils.data.Sampler):
            def __iter__(self):
                step = trainer.step
                while True:
                    yield trainer.global_batch_indices(step)[sl].tolist()
                    step += 1

        loader = torch.utils.data.DataLoader(self.dataset, batch_sampler=_StepSampler(),
                                             num_workers=self.cfg.data.num_workers, pin_memory=True,
                                             persistent_workers=self.cfg.data.num_workers > 0)
        for x, _ in loader:
            yield x

    def step_randomness(self, step: int, shape: tuple[int, ...]) -> dict[str, Any]:
        """All random numbers of one step, for the global batch, sliced to this process."""
        b, seed = self.cfg.train.batch_size, self.cfg.train.seed
        if self.crn:  # one generator per purpose: an arm without a draw (DDPM: no prior noise) shifts no other
            g = {k: seed_generator(seed, k, step) for k in ("flip", "t", "noise", "perturbation", "prior_noise")}
            # dropout draws from the per-process torch RNG: seeded per step (and process) too
            torch.manual_seed(derive(seed, "dropout", step, self.dist.rank))
        else:
            g = dict.fromkeys(("flip", "t", "noise", "perturbation", "prior_noise"),
                              torch.Generator().manual_seed(seed * 1_000_003 + step + 7_919))
        sl = slice(self.dist.rank * self.local_batch, (self.dist.rank + 1) * self.local_batch)
        out = {"flip": torch.rand(b, generator=g["flip"])[sl] < 0.5}
        t, w = self.t_sampler.sample(b, self.device, generator=g["t"])  # on the device: the weights live there
        out["t"], out["weights"] = t[sl], w[sl]
        out["noise"] = torch.randn(b, *shape, generator=g["noise"])[sl]
        out["perturbation"] = torch.randn(b, *shape, generator=g["perturbation"])[sl]
        spec = self.model.latent.noise_spec()
        out["prior_noise"] = None if spec is None else spec.draw(b, g["prior_noise"])[sl]
        return {k: (v.to(self.device, non_blocking=True) if torch.is_tensor(v) else v) for k, v in out.items()}

    def lr_at(self, step: int) -> float:
        """The learning rate of step ``step``: linear warm-up over ``warmup_steps``, then constant (as released) or
        decayed to 0 at ``train.steps`` (``lr_decay`` linear / cosine)."""
        tc = self.cfg.train
        w = tc.warmup_steps
        lr = tc.lr * (min(1.0, (step + 1) / w) if w > 0 else 1.0)
        if tc.lr_decay == "none" or step < w:
            return lr
        frac = min(1.0, (step - w) / max(1, tc.steps - w))
        return lr * ((1.0 - frac) if tc.lr_decay == "linear" else 0.5 * (1.0 + math.cos(math.pi * frac)))

    def ema_rate_at(self, step: int) -> float:
        tc = self.cfg.train
        return min(tc.ema_rate, (1 + step) / (10 + step)) if tc.ema_warmup else tc.ema_rate

    @torch.no_grad()
    def update_ema(self) -> None:
        rate = self.ema_rate_at(self.step)
        ema_p = [p for p in self.ema.parameters()]
        src_p = [p.detach() for p in self.model.parameters()]
        torch._foreach_lerp_(ema_p, src_p, 1.0 - rate)
        for eb, b in zip(self.ema.buffers(), self.model.buffers()):
            eb.copy_(b)

    # -- checkpoints --------------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {
            "model": self.model.state_dict(),
            "ema": self.ema.state_dict(),
            "opt": self.opt.state_dict(),
            "scaler": self.scaler.state_dict(),
            "sampler": self.t_sampler.state_dict(),  # the timestep sampler (key kept: checkpoint format)
            "step": self.step,
            "rng": {"torch": torch.get_rng_state(), "numpy": np.random.get_state(),
                    "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None},
            "config": self.cfg.to_dict(),
            "version": dmz.__version__,
        }

    def save(self) -> Path:
        path = self.out / CHECKPOINT
        if self.dist.is_main:
            save_checkpoint(self.state_dict(), path)
            k = self.cfg.train.keep_checkpoints
            if k and self.step % self.cfg.train.ckpt_every == 0:
                save_checkpoint(self.state_dict(), self.out / f"checkpoint_{self.step:07d}.pt")
        barrier()
        return path

    def load(self, path: Path) -> None:
        state = load_checkpoint(path, map_location=self.device)
        changed = _diff_config(state["config"], self.cfg.to_dict())
        if changed:
            raise ConfigError(f"{path} was written with a different config ({', '.join(changed)} differ); "
                              "use a new --out folder, or the same settings to resume")
        self.model.load_state_dict(state["model"])
        self.ema.load_state_dict(state["ema"])
        self.opt.load_state_dict(state["opt"])
        self.scaler.load_state_dict(state["scaler"])
        self.t_sampler.load_state_dict(state["sampler"])
        self.step = int(state["step"])
        torch.set_rng_state(state["rng"]["torch"].cpu())
        np.random.set_state(state["rng"]["numpy"])
        if state["rng"].get("cuda") is not None and torch.cuda.is_available():
            torch.cuda.set_rng_state_all([s.cpu() for s in state["rng"]["cuda"]])

    # -- the loop -----------------------------------------------------------------------------------------------
    def autocast(self):
        return autocast(self.device, self.amp_dtype)

    def train_step(self, x0: torch.Tensor, r: dict[str, Any]) -> None:
        """One optimizer step on the local batch ``x0`` with the step's randomness ``r`` (:meth:`step_randomness`).

        Nothing here reads a value back from the device (no host synchronisation): the numbers to log, the NaN
        check included, are accumulated on the device in ``self.meter`` and read every ``log_every`` steps and
        before every checkpoint (:meth:`check_finite`)."""
        tc = self.cfg.train
        if self.cfg.data.flip:
            x0 = torch.where(r["flip"].view(-1, 1, 1, 1), x0.flip(-1), x0)
        for group in self.opt.param_groups:
            group["lr"] = self.lr_at(self.step)
        with self.autocast():
            losses, aux, stats = self.step_module(x0, r["t"], r["noise"], r["perturbation"], r["prior_noise"])
        loss = (losses["loss"] * r["weights"]).mean() + aux
        self.t_sampler.update_with_local_losses(r["t"], losses["loss"].detach())
        self.opt.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        vals = {"loss": loss.detach(), "mse": losses["mse"].detach().mean(), "aux": aux.detach(), **stats}
        if "vb" in losses:
            vals["vb"] = losses["vb"].detach().mean()
        if tc.grad_clip > 0:
            self.scaler.unscale_(self.opt)
            vals["grad_norm"] = torch.nn.utils.clip_grad_norm_(self.model.parameters(), tc.grad_clip)
        self.scaler.step(self.opt)
        self.scaler.update()
        self.update_ema()
        self.meter.add(vals, self.step)
        self.step += 1

    def check_finite(self) -> None:
        """Raise :class:`NonFiniteLossError` if a loss since the last check was NaN/inf on any process (reads the
        device: called at log steps and before checkpoints, so the last checkpoint is always a good one)."""
        bad = self.meter.first_bad_step()
        if bad is None:
            return
        ckpt = self.out / CHECKPOINT
        good = f"{ckpt} (step {torch.load(ckpt, map_location='cpu', weights_only=False)['step']})" \
            if ckpt.exists() else "no checkpoint yet"
        raise NonFiniteLossError(
            f"loss became {self.meter.bad_value} at step {bad}; stopping. Last good checkpoint kept: "
            f"{good}. Try a lower train.lr, train.grad_clip=1, or train.precision=fp32.")

    def train(self) -> dict[str, Any]:
        cfg, tc = self.cfg, self.cfg.train
        self.out.mkdir(parents=True, exist_ok=True)
        ckpt = self.out / CHECKPOINT
        if ckpt.exists():
            self.load(ckpt)
            self._say(f"resumed from {ckpt} at step {self.step}")
        if self.dist.is_main:
            atomic_write_json(self.out / CONFIG, cfg.to_dict())
            atomic_write_json(self.out / "run.json", {
                "run_id": cfg.run_id(), "version": dmz.__version__, "torch": torch.__version__,
                "world_size": self.dist.world_size, "device": str(self.device),
                "amp": precision_name(self.amp_dtype),
                "compile": bool(tc.compile), **self.model.param_counts()})
        if self.step >= tc.steps:
            self._say(f"already at step {self.step} >= train.steps={tc.steps}; nothing to do")
            return self._summary({})

        shape = (self.model.channels, self.model.resolution, self.model.resolution)
        batches = self.batches()
        bar = None
        if self.progress and self.dist.is_main:
            from tqdm.auto import tqdm
            bar = tqdm(total=tc.steps, initial=self.step, desc=f"train {cfg.run_id()}", dynamic_ncols=True)
        logger = self._logger()
        t_last_log, t_last_ckpt, n_images = time.perf_counter(), time.perf_counter(), 0
        last: dict[str, Any] = {}
        self.model.train()
        try:
            while self.step < tc.steps:
                x0 = next(batches).to(self.device, non_blocking=True)
                self.train_step(x0, self.step_randomness(self.step, shape))
                n_images += tc.batch_size
                if bar is not None:
                    bar.update(1)
                if self.step % tc.log_every == 0 or self.step == tc.steps:
                    self.check_finite()
                    now = time.perf_counter()
                    last = {"step": self.step, **self.meter.means(),
                            "lr": self.lr_at(self.step - 1), "images_per_s": n_images / max(now - t_last_log, 1e-9),
                            "time": time.time()}
                    t_last_log, n_images = now, 0
                    if self.dist.is_main:
                        append_jsonl(self.out / METRICS, last)
                        logger.scalars(self.step, {k: v for k, v in last.items() if k not in ("step", "time")})
                    if bar is not None:
                        bar.set_postfix(loss=f"{last['loss']:.4f}", img_s=f"{last['images_per_s']:.0f}")
                if tc.sample_every and self.step % tc.sample_every == 0 and logger.enabled:
                    logger.images(self.step, "samples/ema", sample_grid(cfg, self.ema, self.device, step=self.step))
                due = self.step % tc.ckpt_every == 0 or time.perf_counter() - t_last_ckpt > 60 * tc.ckpt_minutes
                if due or self.step == tc.steps:
                    self.check_finite()
                    self.save()
                    t_last_ckpt = time.perf_counter()
        finally:
            logger.close()
            if bar is not None:
                bar.close()
        return self._summary(last)

    def _logger(self):
        """TensorBoard writer of the main process (``train.logger``); a no-op object elsewhere."""
        return RunLogger(self.out, enabled=self.cfg.train.logger == "tensorboard" and self.dist.is_main)

    def _summary(self, last: dict[str, Any]) -> dict[str, Any]:
        summary = {"run_id": self.cfg.run_id(), "step": self.step, "finished": self.step >= self.cfg.train.steps,
                   **{k: v for k, v in last.items() if k != "step"}}
        if self.dist.is_main:
            atomic_write_json(self.out / "train_summary.json", summary)
        return summary


def train(cfg: Config, out_dir: str | os.PathLike, *, progress: bool = True) -> dict[str, Any]:
    """Train (or resume) a run; returns the summary (also written to ``train_summary.json``)."""
    return Trainer(cfg, out_dir, progress=progress).train()


def dry_run_info(cfg: Config) -> dict[str, Any]:
    model = build_model(cfg)
    return {"run_id": cfg.run_id(), **model.param_counts()}
