"""The training loop behind ``edge-derain train``.

Iteration-based over a training pack (``edge_derain.data.pack``: built from ``--data`` on first use, or
given with ``--pack`` on a machine without the data), with validation PSNR/SSIM (Y channel, as the
deraining papers report) every ``epoch_iters``, atomic checkpoints (``last`` and ``best``) as safetensors
+ JSON sidecar + generated model card, and exact resumption from ``last.state.pt``.

On a GPU it uses the hardware: mixed precision (bf16 where supported, else fp16 with loss scaling),
channels-last tensors, the biggest batch that fits (``--batch 0``), DataLoader workers. ``--init`` starts
from existing weights (e.g. the shipped checkpoint) and carries their training lineage forward, so every
run, on any machine, adds to the same weights and the sidecar says how much training they have had.

Validation and checkpoints hold an exponential moving average of the weights (``--ema``, 0.999 as in
BasicSR and Restormer): the raw weights of these small networks swing by about 0.4 dB PSNR-Y on ``val/``
from one validation to the next, and their average over the last ~1000 steps is steadier.
"""
from __future__ import annotations

import contextlib
import copy
import math
import os
import platform
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from .backends import TorchBackend
from .checkpoint import load_training_state, read_sidecar, resolve_weights, save_checkpoint, save_training_state
from .data import DataRecipe, PackedTrainingSet, TrainingPack, build_pack, data_fingerprint, load_pack
from .evaluate import evaluate, evaluate_sets
from .losses import build_loss
from .model_card import lineage_of, write_model_card
from .models import create_model, get_entry
from .utils import atomic_write_json, git_commit

REFERENCE_BATCH = 16   # --lr is the learning rate at this batch; other batches scale it by sqrt(batch / 16)
MAX_AUTO_BATCH = 64


@dataclass
class TrainConfig:
    model: str
    data: str | None
    out: str
    model_config: dict = field(default_factory=dict)
    iters: int = 2000
    batch: int = 8             # 0 = the biggest batch that fits the GPU (up to MAX_AUTO_BATCH); 8 on the CPU
    crop: int = 128
    lr: float = 2e-4
    betas: tuple[float, float] = (0.5, 0.999)    # EfDeRain's official Adam betas (spec §7.5)
    weight_decay: float = 0.0
    decay_start: float = 0.4   # fraction of iters with constant LR before the linear decay to 0 (§7.5)
    min_lr_ratio: float = 0.0
    loss: str | None = None    # None = the model's registered default
    loss_config: dict = field(default_factory=dict)  # keyword arguments of the loss (e.g. autoencoder=...)
    rainmix: str | None = None  # RainMix variant of the recipe: None = the recipe's default ("paper"), or "code"
    recipe: dict = field(default_factory=dict)  # DataRecipe overrides
    pack: str | None = None     # a prebuilt training pack; None = build/reuse OUT/train_pack.npz from data
    pack_mib: float = 64.0
    init: str | None = None     # start from these weights (a path or a shipped name) and extend their lineage
    epoch_iters: int | None = None  # iterations between validations; None = one nominal pack epoch
    time_limit_min: float | None = None  # wall-clock budget; the LR schedule then follows elapsed time
    amp: str = "auto"           # auto (bf16/fp16 on CUDA, off on CPU), off, bf16, fp16
    gpu_share: float = 1.0      # the fraction of the GPU's memory this run may size its batch for
    seed: int = 0
    workers: int = -1           # -1 = auto (CPU count - 1 on CUDA, 0 on the CPU)
    device: str = "auto"
    resume: bool = False
    val_limit: int | None = None
    ema: float = 0.999          # decay of the weight average that is validated and saved; 0 = the raw weights
    final_eval: bool = True     # evaluate every set of edge_derain.data.EVAL_SETS at the end (for the card)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError("--device cuda was requested but torch sees no CUDA GPU; use --device cpu")
    return torch.device(name)


def schedule_progress(step: int, cfg: TrainConfig, elapsed_s: float = 0.0) -> float:
    """Fraction of the run done, in [0, 1]: by iterations, or by wall-clock time when
    ``time_limit_min`` is set, whichever is further (so a time-boxed run still decays its LR to the end)."""
    frac = step / max(1, cfg.iters)
    if cfg.time_limit_min:
        frac = max(frac, elapsed_s / (60.0 * cfg.time_limit_min))
    return min(frac, 1.0)


def lr_factor(step: int, cfg: TrainConfig, elapsed_s: float = 0.0) -> float:
    """Constant, then linear decay to ``min_lr_ratio`` at the end of the run (EfDeRain's schedule)."""
    frac = schedule_progress(step, cfg, elapsed_s)
    if frac < cfg.decay_start:
        return 1.0
    return max(cfg.min_lr_ratio, 1.0 - (frac - cfg.decay_start) / max(1e-9, 1.0 - cfg.decay_start))


def _loss_on_outputs(loss_fn, outputs: tuple[torch.Tensor, ...], rainy: torch.Tensor,
                     clean: torch.Tensor) -> torch.Tensor:
    """One call convention for every model's loss, so the loop needs no per-model cases.

    Single-image losses see the final output; multi-output losses (two-stage models) declare
    ``takes_all_outputs``, and losses that derive targets from the input (RECA-Net's rain layer and
    mask) declare ``needs_rainy_input``.
    """
    if not getattr(loss_fn, "takes_all_outputs", False):
        return loss_fn(outputs[0], clean)
    if getattr(loss_fn, "needs_rainy_input", False):
        return loss_fn(outputs, clean, rainy=rainy)
    return loss_fn(outputs, clean)


def validate(model: torch.nn.Module, data, device: torch.device, limit: int | None = None) -> dict:
    """Mean PSNR/SSIM (Y and RGB) of the model and of the rainy input on paired data (a folder or dataset)."""
    was_training = model.training
    metrics = evaluate(TorchBackend(model, device), data, limit=limit, progress=False)["mean"]
    model.train(was_training)
    return metrics


def prepare_pack(cfg: TrainConfig, progress: bool = True) -> TrainingPack:
    """The pack named by ``--pack``, else ``OUT/train_pack.npz`` (rebuilt when the data or budget changed)."""
    if cfg.pack:
        return load_pack(cfg.pack)
    if not cfg.data:
        raise ValueError("give --data DIR (to pack it) or --pack FILE (a pack built by 'edge-derain pack')")
    path = Path(cfg.out) / "train_pack.npz"
    if path.is_file():
        pack = load_pack(path)
        if (pack.meta.get("fingerprint") == data_fingerprint(cfg.data) and pack.meta.get("budget_mib") == cfg.pack_mib
                and pack.crop >= cfg.crop):
            return pack
    return build_pack(cfg.data, path, budget_mib=cfg.pack_mib, crop=max(cfg.crop, 128), seed=cfg.seed,
                      progress=progress)


def amp_dtype(cfg: TrainConfig, device: torch.device) -> torch.dtype | None:
    """The autocast dtype: bf16 on GPUs that have it (no loss scaling needed), else fp16; none on the CPU,
    whose bf16 is emulated and slower than fp32 on the project's machines."""
    if cfg.amp == "off" or (cfg.amp == "auto" and device.type != "cuda"):
        return None
    if cfg.amp == "bf16" or (cfg.amp == "auto" and torch.cuda.is_bf16_supported()):
        return torch.bfloat16
    if cfg.amp in ("fp16", "auto"):
        return torch.float16
    raise ValueError(f"--amp must be auto, off, bf16 or fp16, got {cfg.amp!r}")


def _train_step(model, loss_fn, optim, scaler, rain, clean, dtype) -> torch.Tensor:
    autocast = (torch.autocast(device_type=rain.device.type, dtype=dtype) if dtype is not None
                else contextlib.nullcontext())
    with autocast:
        outputs = model.forward_train(rain)
    # The loss (SSIM windows, sums over the batch) runs in fp32 whatever the network computed in.
    loss = _loss_on_outputs(loss_fn, tuple(o.float() for o in outputs), rain, clean)
    optim.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    scaler.step(optim)
    scaler.update()
    return loss


def choose_batch(cfg: TrainConfig, model, loss_fn, device: torch.device, dtype) -> int:
    """``cfg.batch``, or with ``--batch 0`` on a GPU the biggest power of two (<= MAX_AUTO_BATCH) whose
    training step fits in 85 % of this run's share of the GPU's memory (8 on the CPU)."""
    if cfg.batch > 0:
        return cfg.batch
    if device.type != "cuda":
        return 8
    total = torch.cuda.get_device_properties(device).total_memory * cfg.gpu_share
    optim = torch.optim.SGD(model.parameters(), lr=0.0)   # a throwaway optimiser: the probe must not train
    scaler = torch.amp.GradScaler("cuda", enabled=dtype == torch.float16)
    batch = MAX_AUTO_BATCH
    while batch > 1:
        try:
            torch.cuda.reset_peak_memory_stats(device)
            x = torch.rand(batch, 3, cfg.crop, cfg.crop, device=device).to(memory_format=torch.channels_last)
            _train_step(model, loss_fn, optim, scaler, x, x, dtype)
            if torch.cuda.max_memory_allocated(device) < 0.85 * total:
                break
        except torch.cuda.OutOfMemoryError:
            pass
        batch //= 2
        torch.cuda.empty_cache()
    model.zero_grad(set_to_none=True)
    return batch


class WeightEMA:
    """An exponential moving average of a model's parameters and buffers, kept in a copy of the model.

    The decay warms up as ``min(decay, (1 + n) / (10 + n))`` after ``n`` updates (TensorFlow's
    ExponentialMovingAverage), so a short run is not pinned to its initial weights. ``parameters()`` lists a
    parameter shared by several modules once, so shared weights are averaged once per step.
    """

    def __init__(self, model: torch.nn.Module, decay: float):
        if not 0.0 < decay < 1.0:
            raise ValueError(f"--ema must be in (0, 1) (e.g. 0.999), or 0 to validate the raw weights; got {decay}")
        self.module = copy.deepcopy(model).eval().requires_grad_(False)
        self.decay, self.updates = decay, 0

    def _pairs(self, model: torch.nn.Module):
        yield from zip(self.module.parameters(), model.parameters())
        yield from zip(self.module.buffers(), model.buffers())

    @torch.no_grad()
    def update(self, model: torch.nn.Module) -> None:
        self.updates += 1
        decay = min(self.decay, (1 + self.updates) / (10 + self.updates))
        for average, current in self._pairs(model):
            if average.is_floating_point():
                average.lerp_(current.detach(), 1.0 - decay)
            else:
                average.copy_(current)

    def state_dict(self) -> dict:
        return {"module": self.module.state_dict(), "updates": self.updates}

    def load_state_dict(self, state: dict) -> None:
        self.module.load_state_dict(state["module"])
        self.updates = int(state["updates"])


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)} (torch {torch.__version__})"
    return f"CPU {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads (torch {torch.__version__})"


def _load_init(cfg: TrainConfig, model: torch.nn.Module) -> list[dict]:
    """Load ``--init`` weights into ``model``; return the lineage they carry (their earlier runs)."""
    from .checkpoint import load_model

    path = resolve_weights(cfg.init)
    meta = read_sidecar(path)
    if meta["model"] != cfg.model or meta.get("config", {}) != cfg.model_config:
        raise ValueError(f"--init {cfg.init} holds {meta['model']} {meta.get('config', {})}, not {cfg.model} "
                         f"{cfg.model_config}; pass the same --model/--width as the weights")
    model.load_state_dict(load_model(path).state_dict())
    return lineage_of(meta)


class TrainingRun:
    """One ``edge-derain train`` run: its model, optimiser and data, and the checkpoints it writes."""

    def __init__(self, cfg: TrainConfig, progress: bool = True):
        self.cfg, self.progress, self.out = cfg, progress, Path(cfg.out)
        self.out.mkdir(parents=True, exist_ok=True)
        self.device = device = resolve_device(cfg.device)
        torch.manual_seed(cfg.seed)
        model = create_model(cfg.model, **cfg.model_config).to(device)
        if cfg.crop % model.input_multiple:
            raise ValueError(f"--crop {cfg.crop} is not a multiple of {model.input_multiple} (required by {cfg.model})")
        self.loss_fn = build_loss(cfg.loss or get_entry(cfg.model).default_loss, **cfg.loss_config).to(device)
        recipe = DataRecipe(**{**({"rainmix_variant": cfg.rainmix} if cfg.rainmix else {}), **cfg.recipe})
        pack = prepare_pack(cfg, progress)
        self.lineage = _load_init(cfg, model) if cfg.init and not cfg.resume else []
        self.dtype = amp_dtype(cfg, device)
        if device.type == "cuda":
            # cuDNN's NHWC kernels are the fast path for these conv nets on tensor cores.
            model = model.to(memory_format=torch.channels_last)
            torch.backends.cudnn.benchmark = True
        self.model = model
        self.ema = WeightEMA(model, cfg.ema) if cfg.ema else None
        self.batch = choose_batch(cfg, model, self.loss_fn, device, self.dtype)
        self.lr = cfg.lr * math.sqrt(self.batch / REFERENCE_BATCH)
        self.optim = torch.optim.Adam(model.parameters(), lr=self.lr, betas=tuple(cfg.betas),
                                      weight_decay=cfg.weight_decay)
        self.scaler = torch.amp.GradScaler(device.type, enabled=self.dtype == torch.float16)
        self.train_set = PackedTrainingSet(pack, crop=cfg.crop, recipe=recipe, seed=cfg.seed)
        workers = cfg.workers if cfg.workers >= 0 else (
            max(1, min(8, (os.cpu_count() or 2) - 1)) if device.type == "cuda" else 0)
        self.loader = DataLoader(self.train_set, batch_size=self.batch, shuffle=False, drop_last=True,
                                 num_workers=workers, persistent_workers=workers > 0,
                                 pin_memory=device.type == "cuda")
        self.epoch_iters = cfg.epoch_iters or max(1, len(self.loader))
        self.val_dir = Path(cfg.data) / "val" if cfg.data and (Path(cfg.data) / "val").is_dir() else None
        self.step, self.best, self.history, self.previous_wall, self.run_start = 0, -math.inf, [], 0.0, 0
        self.state_path = self.out / "last.state.pt"
        self.metrics: dict = {}
        self.run_record = {
            "started": datetime.now(timezone.utc).isoformat(timespec="seconds"), "device": device.type,
            "device_name": _device_name(device), "batch": self.batch, "crop": cfg.crop, "lr": self.lr,
            "amp": str(self.dtype).replace("torch.", "") if self.dtype else "off", "init": cfg.init, "ema": cfg.ema,
            "pack": {k: pack.meta.get(k) for k in ("fingerprint", "counts", "budget_mib", "bytes")}}
        self.meta = {"data": {"dir": str(cfg.data) if cfg.data else None, "pack": pack.meta,
                              "recipe": recipe.to_dict()},
                     "train_config": asdict(cfg), "git_commit": git_commit()}
        if cfg.resume:
            self._resume()

    def _resume(self) -> None:
        cfg = self.cfg
        if not self.state_path.exists():
            raise FileNotFoundError(f"--resume: {self.state_path} does not exist; start without --resume")
        state = load_training_state(self.state_path)
        if state["config"]["model"] != cfg.model or state["config"]["model_config"] != cfg.model_config:
            raise ValueError(f"--resume: {self.state_path} trains {state['config']['model']} "
                             f"{state['config']['model_config']}, not {cfg.model} {cfg.model_config}")
        self.model.load_state_dict(state["model"])
        self.optim.load_state_dict(state["optimizer"])
        if self.ema is not None:
            if "ema" in state:
                self.ema.load_state_dict(state["ema"])
            else:   # a state saved without an average: the average starts at the resumed weights
                self.ema.module.load_state_dict(state["model"])
        self.step, self.best, self.history = state["step"], state["best"], list(state["history"])
        self.lineage, self.previous_wall = list(state.get("lineage", [])), float(state.get("wall_s", 0.0))
        self.run_start = int(state.get("run_start", 0))   # a resumed run is the same run: it counts from its start
        self.metrics = self.history[-1]["val"] if self.history else {}
        torch.set_rng_state(state["torch_rng"])

    def _batches(self):
        """(epoch, batch) forever, from the current step. Each epoch re-seeds the data from (seed, epoch,
        index), so resuming at a step continues the same sample stream without the loader's state."""
        epoch, skip = divmod(self.step, len(self.loader))
        while True:
            self.train_set.set_epoch(epoch)
            for i, item in enumerate(self.loader):
                if i >= skip:
                    yield epoch, item
            epoch, skip = epoch + 1, 0

    @property
    def weights(self) -> torch.nn.Module:
        """The weights this run validates and saves: the moving average, or the raw weights with ``--ema 0``."""
        return self.ema.module if self.ema is not None else self.model

    def wall(self) -> float:
        return self.previous_wall + time.perf_counter() - self.t0

    def save(self, stem: str, eval_results: dict | None = None) -> Path:
        """Checkpoint ``stem`` with its sidecar (config, data, lineage incl. this run) and model card."""
        runs = self.lineage + [{**self.run_record, "iters": self.step - self.run_start,
                                "wall_s": round(self.wall(), 1), "step": self.step}]
        extra = {"eval": eval_results} if eval_results else {}
        weights = save_checkpoint(self.out / stem, self.weights, **self.meta, step=self.step, metrics=self.metrics,
                                  lineage=runs, **extra)
        write_model_card(weights)
        return weights

    def checkpoint(self, epoch: int, loss: float, bar) -> None:
        """Validate, write ``last`` (and ``best`` on a validation record), the resumable state and history."""
        if self.val_dir is not None:
            self.metrics = validate(self.weights, self.val_dir, self.device, self.cfg.val_limit)
            bar.write(f"step {self.step}: loss {loss:.4f}  val PSNR-Y {self.metrics['psnr_y']:.2f} dB "
                      f"(rainy input {self.metrics['input_psnr_y']:.2f})  SSIM-Y {self.metrics['ssim_y']:.4f}")
        self.history.append({"step": self.step, "epoch": epoch, "loss": loss, "val": self.metrics,
                             "elapsed_s": self.wall()})
        self.save("last")
        if self.metrics and self.metrics["psnr_y"] > self.best:
            self.best = self.metrics["psnr_y"]
            self.save("best")
        save_training_state(self.state_path, {
            "model": self.model.state_dict(), "optimizer": self.optim.state_dict(), "step": self.step,
            **({"ema": self.ema.state_dict()} if self.ema is not None else {}),
            "best": self.best, "history": self.history, "torch_rng": torch.get_rng_state(), "lineage": self.lineage,
            "wall_s": self.wall(), "run_start": self.run_start,
            "config": {"model": self.cfg.model, "model_config": self.cfg.model_config}})
        atomic_write_json(self.out / "history.json", self.history)

    def run(self) -> dict:
        """Train to ``iters`` or the time limit; return ``{"val", "losses", "best", "last", "eval"}``."""
        cfg, device = self.cfg, self.device
        self.model.train()
        bar = tqdm(total=cfg.iters, initial=self.step, disable=not self.progress, unit="it",
                   desc=f"train {cfg.model} (batch {self.batch})")
        running, losses, self.t0 = None, [], time.perf_counter()
        stream = self._batches()
        done = self.step >= cfg.iters
        while not done:
            epoch, item = next(stream)
            rain = item["rain"].to(device, non_blocking=True)
            clean = item["clean"].to(device, non_blocking=True)
            if device.type == "cuda":
                rain = rain.to(memory_format=torch.channels_last)
            for group in self.optim.param_groups:
                group["lr"] = self.lr * lr_factor(self.step, cfg, self.wall())   # a resumed run keeps its clock
            loss = _train_step(self.model, self.loss_fn, self.optim, self.scaler, rain, clean, self.dtype)
            if not torch.isfinite(loss):
                raise FloatingPointError(f"loss became {loss.item()} at step {self.step}; lower --lr or check the data")
            if self.ema is not None:
                self.ema.update(self.model)
            self.step += 1
            losses.append(loss.item())
            running = losses[-1] if running is None else 0.95 * running + 0.05 * losses[-1]
            bar.set_postfix(loss=f"{running:.4f}", lr=f"{self.optim.param_groups[0]['lr']:.2e}")
            bar.update()
            done = schedule_progress(self.step, cfg, self.wall()) >= 1.0 or self.step >= cfg.iters
            if self.step % self.epoch_iters == 0 or done:
                self.checkpoint(epoch, running, bar)
        bar.close()
        eval_results = {}
        if cfg.final_eval and cfg.data:
            eval_results = evaluate_sets(TorchBackend(self.weights, device), cfg.data, progress=self.progress)
            self.model.train()
            self.save("last", eval_results)
        return {"val": self.metrics, "losses": losses, "best": str(self.out / "best.safetensors"),
                "last": str(self.out / "last.safetensors"), "eval": eval_results}


def train(cfg: TrainConfig, progress: bool = True) -> dict:
    """Train ``cfg.model`` on the pack of ``cfg.data`` (or ``cfg.pack``); see :meth:`TrainingRun.run`."""
    return TrainingRun(cfg, progress).run()


def train_rain_autoencoder(data_dir: str | Path, out: str | Path, iters: int = 2000, batch: int = 8, crop: int = 96,
                           lr: float = 2e-4, seed: int = 0, device: str = "auto", progress: bool = True,
                           pack: str | Path | None = None) -> Path:
    """Fit RECA-Net's rain autoencoder (ECNet): ``MSE(ae(R), R)`` on the rain layers ``R`` of the same
    training pairs the models see; its bottleneck is the target of RECA-Net's embedding-consistency loss.

    Writes the state dict to ``out`` (.safetensors, atomic); pass it to RECA-Net training with
    ``--loss-arg autoencoder=OUT``.
    """
    from safetensors.torch import save_file

    from .models.recanet import RainAutoencoder, rain_layer
    from .utils import atomic_path

    out = Path(out).with_suffix(".safetensors")
    torch.manual_seed(seed)
    device = resolve_device(device)
    autoencoder = RainAutoencoder().to(device).train()
    optim = torch.optim.Adam(autoencoder.parameters(), lr=lr)
    cfg = TrainConfig(model="rain_autoencoder", data=str(data_dir) if data_dir else None, out=str(out.parent),
                      crop=crop, pack=str(pack) if pack else None)
    train_set = PackedTrainingSet(prepare_pack(cfg, progress), crop=crop, seed=seed)
    loader = iter(DataLoader(train_set, batch_size=batch, shuffle=False, drop_last=True))
    bar = tqdm(range(iters), disable=not progress, desc="train rain autoencoder", unit="it")
    for i in bar:
        try:
            item = next(loader)
        except StopIteration:
            train_set.set_epoch(i)
            loader = iter(DataLoader(train_set, batch_size=batch, shuffle=False, drop_last=True))
            item = next(loader)
        rain = rain_layer(item["rain"].to(device), item["clean"].to(device))
        loss = torch.nn.functional.mse_loss(autoencoder(rain), rain)
        optim.zero_grad(set_to_none=True)
        loss.backward()
        optim.step()
        bar.set_postfix(mse=f"{loss.item():.5f}")
    state = {k: v.detach().contiguous().cpu() for k, v in autoencoder.state_dict().items()}
    with atomic_path(out) as tmp:
        save_file(state, str(tmp))
    return out
