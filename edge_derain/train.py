"""The training loop behind ``edge-derain train``.

Iteration-based (small data sets are repeated), with validation PSNR/SSIM (Y channel, as the deraining
papers report) at every epoch boundary, atomic checkpoints (``last`` and ``best``) as safetensors + JSON
sidecar, and exact resumption from ``last.state.pt`` (model, optimiser, step, RNG states).
"""
from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from .checkpoint import load_training_state, save_checkpoint, save_training_state
from .backends import TorchBackend
from .data import build_training_set
from .evaluate import evaluate
from .losses import build_loss
from .models import create_model, get_entry
from .utils import atomic_write_json, git_commit


@dataclass
class TrainConfig:
    model: str
    data: str
    out: str
    model_config: dict = field(default_factory=dict)
    iters: int = 2000
    batch: int = 8
    crop: int = 128
    lr: float = 2e-4
    betas: tuple[float, float] = (0.5, 0.999)    # EfDeRain's official Adam betas (spec §7.5)
    weight_decay: float = 0.0
    decay_start: float = 0.4   # fraction of iters with constant LR before the linear decay to 0 (§7.5)
    min_lr_ratio: float = 0.0
    loss: str | None = None    # None = the model's registered default
    loss_config: dict = field(default_factory=dict)  # keyword arguments of the loss (e.g. autoencoder=...)
    rainmix: str | None = None  # None | "paper" | "code"
    epoch_iters: int | None = None  # iterations between validations; None = one pass over the data
    time_limit_min: float | None = None  # wall-clock budget; the LR schedule then follows elapsed time
    seed: int = 0
    workers: int = 0
    device: str = "auto"
    resume: bool = False
    val_limit: int | None = None


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


def validate(model: torch.nn.Module, val_dir: Path, device: torch.device, limit: int | None = None) -> dict:
    """Mean PSNR/SSIM (Y and RGB) of the model and of the rainy input on the validation pairs."""
    metrics = evaluate(TorchBackend(model, device), val_dir, limit=limit, progress=False)["mean"]
    model.train()
    return metrics


def _infinite(loader: DataLoader, dataset, start_epoch: int):
    epoch = start_epoch
    while True:
        dataset.set_epoch(epoch)
        yield from ((epoch, batch) for batch in loader)
        epoch += 1


def train(cfg: TrainConfig, progress: bool = True) -> dict:
    """Train ``cfg.model`` on ``cfg.data``.

    Returns ``{"val": final validation metrics, "losses": per-step losses of this run, "best": path}``.
    """
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    device = resolve_device(cfg.device)
    torch.manual_seed(cfg.seed)
    model = create_model(cfg.model, **cfg.model_config).to(device)
    if cfg.crop % model.input_multiple:
        raise ValueError(f"--crop {cfg.crop} is not a multiple of {model.input_multiple} (required by {cfg.model})")
    loss_fn = build_loss(cfg.loss or get_entry(cfg.model).default_loss, **cfg.loss_config).to(device)
    optim = torch.optim.Adam(model.parameters(), lr=cfg.lr, betas=tuple(cfg.betas), weight_decay=cfg.weight_decay)

    train_set = build_training_set(cfg.data, crop=cfg.crop, seed=cfg.seed, rainmix=cfg.rainmix)
    val_dir = Path(cfg.data) / "val"
    loader = DataLoader(train_set, batch_size=cfg.batch, shuffle=False, drop_last=True,
                        num_workers=cfg.workers, persistent_workers=cfg.workers > 0)
    epoch_iters = cfg.epoch_iters or max(1, len(loader))

    step, best, history = 0, -math.inf, []
    state_path = out / "last.state.pt"
    if cfg.resume:
        if not state_path.exists():
            raise FileNotFoundError(f"--resume: {state_path} does not exist; start without --resume")
        state = load_training_state(state_path)
        if state["config"]["model"] != cfg.model or state["config"]["model_config"] != cfg.model_config:
            raise ValueError(f"--resume: {state_path} trains {state['config']['model']} "
                             f"{state['config']['model_config']}, not {cfg.model} {cfg.model_config}")
        model.load_state_dict(state["model"])
        optim.load_state_dict(state["optimizer"])
        step, best, history = state["step"], state["best"], list(state["history"])
        torch.set_rng_state(state["torch_rng"])

    # Each epoch re-seeds the data from (seed, epoch, index), so resuming at a step continues the
    # same sample stream without storing the data loader's state.
    epoch0 = step // max(1, len(loader))
    batches = _infinite(loader, train_set, epoch0)
    for _ in range(step % max(1, len(loader))):
        next(batches)

    meta = {"data": str(cfg.data), "train_config": asdict(cfg), "git_commit": git_commit()}
    model.train()
    bar = tqdm(total=cfg.iters, initial=step, disable=not progress, desc=f"train {cfg.model}", unit="it")
    running, t0, losses = None, time.perf_counter(), []
    metrics = history[-1]["val"] if history else {}
    done = step >= cfg.iters
    while not done:
        epoch, batch = next(batches)
        rain, clean = batch["rain"].to(device), batch["clean"].to(device)
        for group in optim.param_groups:
            group["lr"] = cfg.lr * lr_factor(step, cfg, time.perf_counter() - t0)
        loss = _loss_on_outputs(loss_fn, model.forward_train(rain), rain, clean)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"loss became {loss.item()} at step {step}; lower --lr or check the data")
        optim.zero_grad(set_to_none=True)
        loss.backward()
        optim.step()
        step += 1
        losses.append(loss.item())
        running = loss.item() if running is None else 0.95 * running + 0.05 * loss.item()
        bar.set_postfix(loss=f"{running:.4f}", lr=f"{optim.param_groups[0]['lr']:.2e}")
        bar.update()
        done = schedule_progress(step, cfg, time.perf_counter() - t0) >= 1.0
        if step % epoch_iters == 0 or done:
            metrics = validate(model, val_dir, device, cfg.val_limit)
            history.append({"step": step, "epoch": epoch, "loss": running, "val": metrics,
                            "elapsed_s": time.perf_counter() - t0})
            bar.write(f"step {step}: loss {running:.4f}  val PSNR-Y {metrics['psnr_y']:.2f} dB "
                      f"(rainy input {metrics['input_psnr_y']:.2f})  SSIM-Y {metrics['ssim_y']:.4f}")
            save_checkpoint(out / "last", model, **meta, step=step, metrics=metrics)
            if metrics["psnr_y"] > best:
                best = metrics["psnr_y"]
                save_checkpoint(out / "best", model, **meta, step=step, metrics=metrics)
            save_training_state(state_path, {
                "model": model.state_dict(), "optimizer": optim.state_dict(), "step": step, "best": best,
                "history": history, "torch_rng": torch.get_rng_state(),
                "config": {"model": cfg.model, "model_config": cfg.model_config}})
            atomic_write_json(out / "history.json", history)
    bar.close()
    return {"val": metrics, "losses": losses, "best": str(out / "best.safetensors")}


def train_rain_autoencoder(data_dir: str | Path, out: str | Path, iters: int = 2000, batch: int = 8, crop: int = 96,
                           lr: float = 2e-4, seed: int = 0, device: str = "auto", progress: bool = True) -> Path:
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
    train_set = build_training_set(data_dir, crop=crop, seed=seed)
    loader = DataLoader(train_set, batch_size=batch, shuffle=False, drop_last=True)
    batches = _infinite(loader, train_set, 0)
    bar = tqdm(range(iters), disable=not progress, desc="train rain autoencoder", unit="it")
    for _ in bar:
        _, item = next(batches)
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
