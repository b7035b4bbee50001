"""Fine-tuning with adversarial examples (Bastani et al. 2016, Sec. 5-6).

For T rounds: pick a random subset of the ORIGINAL training points (``examples_per_round``
of them, for speed; the paper attacks every training point), find an adversarial example
for each correctly classified one with algorithm `method` ("lp", "pgd", "fgsm", "lbfgs"),
requiring the logit margin ``f_adv >= f_label + margin`` (alpha = 3 in the paper, so that
rounding to pixel values keeps the example adversarial), label it with the point's ORIGINAL
label, add it to the (growing) augmented training set, and continue training on the
augmented set with learning rate ``lr * lr_scale`` (Adam, cross-entropy).

Every method here takes the margin directly (`lp_restriction(margin=)`, and the attacks'
`margin=` argument, which makes their witness check require it), so every kept example
has a verified margin >= `margin` before rounding. With ``pixel_divisor`` the examples are
then rounded to the pixel grid (``round(w * d) / d``) and kept only if still misclassified
as some other label after rounding (the count dropped is logged).

Training runs on `to_torch(net)` (float64); the trained parameters are rounded to float32
(so the returned `Network` equals the exported ONNX file up to float32 arithmetic) and
written back with `to_network`.

This module imports torch at import time.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from milpverify.errors import InvalidInputError
from milpverify.ir.network import Network
from milpverify.runs.tasks import method_function

METHODS = ("lp", "pgd", "fgsm", "lbfgs")

#: Default per-method options (the paper's choice of target: the second most likely label).
DEFAULT_OPTIONS: dict[str, dict[str, Any]] = {
    "lp": {"target": "second"},
    "pgd": {},
    "fgsm": {},
    "lbfgs": {"targets": "second"},
}


def _check(images: Any, labels: Any, net: Network, method: str, rounds: int, margin: float,
           lr_scale: float, lr: float, epochs: int, examples_per_round: int, batch_size: int
           ) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.int64]]:
    if not isinstance(net, Network):
        raise InvalidInputError(f"finetune expects a Network; got {type(net).__name__}.")
    if method not in METHODS:
        raise InvalidInputError(f"`method` must be one of {', '.join(METHODS)}; got {method!r}.")
    for name, value in (("rounds", rounds), ("epochs", epochs),
                        ("examples_per_round", examples_per_round), ("batch_size", batch_size)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise InvalidInputError(f"`{name}` must be an integer >= 1; got {value!r}.")
    if not (isinstance(margin, (int, float)) and math.isfinite(margin) and margin >= 0):
        raise InvalidInputError(f"`margin` must be a finite number >= 0; got {margin!r}.")
    for name, value in (("lr_scale", lr_scale), ("lr", lr)):
        if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
            raise InvalidInputError(f"`{name}` must be a finite number > 0; got {value!r}.")
    x = np.asarray(images, dtype=np.float64)
    y = np.asarray(labels)
    if x.ndim < 1 or len(x) == 0 or y.ndim != 1 or len(x) != len(y):
        raise InvalidInputError(f"`images` {list(x.shape)} and `labels` {list(y.shape)} must be "
                                "non-empty with the same number of samples.")
    x = x.reshape(len(x), -1)
    if x.shape[1] != net.input_size:
        raise InvalidInputError(f"images have {x.shape[1]} values each; the network takes "
                                f"{net.input_size}.")
    if y.dtype.kind not in "iu" or np.any(y < 0) or np.any(y >= net.num_classes):
        raise InvalidInputError(f"`labels` must be integers in 0..{net.num_classes - 1}.")
    return x, y.astype(np.int64)


def _accuracy(module: Any, x: Any, y: Any) -> float:
    import torch
    with torch.no_grad():
        pred = torch.cat([module(b).argmax(1) for b in x.split(4096)])
    return float((pred == y).double().mean())


def finetune(net: Network, images: npt.ArrayLike, labels: npt.ArrayLike, *, method: str = "lp",
             rounds: int = 1, margin: float = 3.0, lr_scale: float = 0.1, lr: float = 1e-3,
             epochs: int = 1, examples_per_round: int = 500, batch_size: int = 64,
             seed: int = 0, pixel_divisor: float | None = None,
             domain: tuple[float, float] = (0.0, 1.0),
             method_options: Mapping[str, Any] | None = None,
             progress: bool = True,
             on_round: Callable[[int, Network, dict[str, Any]], None] | None = None
             ) -> tuple[Network, dict[str, Any]]:
    """Fine-tune `net` on `images`/`labels` augmented with adversarial examples of `method`.

    Parameters
    ----------
    net : Network
    images, labels : arrays
        The original training set (images scaled as the network expects, inside `domain`).
    method : {"lp", "pgd", "fgsm", "lbfgs"}
        Algorithm A that finds the adversarial examples (LP restriction with target "second"
        by default; L-BFGS with targets "second"; PGD / FGSM untargeted).
    rounds : int
        T, the number of rounds (>= 1).
    margin : float
        alpha: required logit margin of every adversarial example (default 3.0).
    lr_scale, lr : float
        Training continues with Adam at learning rate `lr * lr_scale`.
    epochs : int
        Epochs over the augmented set per round.
    examples_per_round : int
        Size of the random subset of original points attacked per round (all points when
        larger than the training set). Misclassified points are skipped.
    batch_size, seed : int
    pixel_divisor : float, optional
        Round adversarial examples to multiples of 1 / pixel_divisor; drop those that are
        no longer misclassified.
    method_options : mapping, optional
        Extra keyword arguments for the method (override `DEFAULT_OPTIONS`).
    progress : bool
        tqdm progress bars on stderr.
    on_round : callable, optional
        Called as ``on_round(t, network_after_round_t, round_log)`` after every round.

    Returns
    -------
    (Network, dict)
        The fine-tuned network (float32-rounded weights, with an ONNX origin) and the log:
        ``{"config": ..., "rounds": [{round, attempted, found, kept, ...}, ...]}``.

    Example
    -------
    >>> new, log = finetune(net, images, labels, method="lp", rounds=1)
    """
    x_np, y_np = _check(images, labels, net, method, rounds, margin, lr_scale, lr, epochs,
                        examples_per_round, batch_size)
    if pixel_divisor is not None and not (math.isfinite(pixel_divisor) and pixel_divisor > 0):
        raise InvalidInputError(f"`pixel_divisor` must be a finite number > 0; got "
                                f"{pixel_divisor!r}.")
    if np.any(x_np < domain[0]) or np.any(x_np > domain[1]):
        raise InvalidInputError(f"`images` lie outside the domain [{domain[0]:g}, {domain[1]:g}] "
                                "(check --pixel-divisor).")
    import torch
    from tqdm import tqdm

    from milpverify.frontends.torchnet import to_network, to_torch

    attack = method_function(method)[0]  # the estimator `evaluate` runs for this method
    options = {**DEFAULT_OPTIONS[method], **dict(method_options or {})}
    rng = np.random.default_rng(seed)
    generator = torch.Generator().manual_seed(seed)
    module = to_torch(net)
    x_train = torch.as_tensor(x_np, dtype=module.dtype)
    y_train = torch.as_tensor(y_np)
    adv_x: list[npt.NDArray[np.float64]] = []
    adv_y: list[int] = []
    config = {"method": method, "rounds": rounds, "margin": margin, "lr": lr,
              "lr_scale": lr_scale, "train_lr": lr * lr_scale, "epochs": epochs,
              "examples_per_round": examples_per_round, "batch_size": batch_size, "seed": seed,
              "pixel_divisor": pixel_divisor, "method_options": options,
              "training_points": len(y_np), "optimizer": "Adam", "loss": "cross_entropy"}
    log: dict[str, Any] = {"config": config,
                           "initial_accuracy": _accuracy(module, x_train, y_train),
                           "rounds": []}
    current = net
    optimiser = torch.optim.Adam(module.parameters(), lr=lr * lr_scale)
    for t in range(1, rounds + 1):
        start = time.perf_counter()
        chosen = rng.permutation(len(y_np))[:examples_per_round]
        pred = current.forward(x_np[chosen]).argmax(axis=1)
        chosen = chosen[pred == y_np[chosen]]
        found, kept, dropped_rounding, distances = _examples(
            current, attack, options, x_np, y_np, chosen, margin, pixel_divisor, domain,
            adv_x, adv_y, f"round {t}/{rounds}: {method} examples", progress)
        attack_s = time.perf_counter() - start
        # Continue training on the augmented set at the reduced rate.
        if adv_x:
            xa = torch.cat([x_train, torch.as_tensor(np.stack(adv_x), dtype=module.dtype)])
            ya = torch.cat([y_train, torch.as_tensor(adv_y)])
        else:
            xa, ya = x_train, y_train
        train_start = time.perf_counter()
        losses = _train(module, optimiser, xa, ya, epochs, batch_size, generator,
                        f"round {t}/{rounds}: training", progress)
        with torch.no_grad():  # the exported file holds float32 weights: train on those
            for p in module.parameters():
                p.copy_(p.float().double() if p.dtype == torch.float64 else p)
        current = to_network(module)
        entry = {"round": t, "attempted": int(len(chosen)), "found": found, "kept": kept,
                 "dropped_by_rounding": dropped_rounding, "augmented_size": int(len(ya)),
                 "adversarial_total": len(adv_y),
                 "median_distance": float(np.median(distances)) if distances else None,
                 "train_loss": losses[-1], "train_loss_per_epoch": losses,
                 "train_accuracy": _accuracy(module, x_train, y_train),
                 "attack_s": attack_s, "train_s": time.perf_counter() - train_start}
        log["rounds"].append(entry)
        if on_round is not None:
            on_round(t, current, entry)
        if progress:
            tqdm.write(f"round {t}/{rounds}: {found}/{len(chosen)} examples found, {kept} kept; "
                     f"loss {entry['train_loss']:.4f}, train accuracy "
                     f"{100 * entry['train_accuracy']:.2f}%", file=sys.stderr)
    return current, log


def _examples(current: Network, attack: Callable[..., Any], options: dict[str, Any],
              x_np: npt.NDArray[np.float64], y_np: npt.NDArray[np.int64],
              chosen: npt.NDArray[np.int64], margin: float, pixel_divisor: float | None,
              domain: tuple[float, float], adv_x: list[npt.NDArray[np.float64]],
              adv_y: list[int], desc: str, progress: bool
              ) -> tuple[int, int, int, list[float]]:
    """Attack each chosen point; verified witnesses (rounded to the pixel grid when asked,
    and dropped if rounding undoes them) are appended to `adv_x`/`adv_y`. Returns the
    counts found, kept and dropped by rounding, and the kept distances."""
    from tqdm import tqdm

    found = kept = dropped_rounding = 0
    distances: list[float] = []
    bar = tqdm(chosen, desc=desc, unit="pt", disable=not progress, leave=False)
    for i in bar:
        result = attack(current, x_np[i], label=int(y_np[i]), margin=margin, **options)
        if result.witness is None or not result.witness_verified:
            continue
        found += 1
        w = np.asarray(result.witness, dtype=np.float64).reshape(-1)
        if pixel_divisor is not None:
            w = np.clip(np.round(w * pixel_divisor) / pixel_divisor, *domain)
            if int(current.forward(w).argmax(axis=1)[0]) == int(y_np[i]):
                dropped_rounding += 1
                continue
        kept += 1
        distances.append(float(np.abs(w - x_np[i]).max()))
        adv_x.append(w)
        adv_y.append(int(y_np[i]))
        bar.set_postfix(found=found)
    bar.close()
    return found, kept, dropped_rounding, distances


def _train(module: Any, optimiser: Any, xa: Any, ya: Any, epochs: int, batch_size: int,
           generator: Any, desc: str, progress: bool) -> list[float]:
    """`epochs` of cross-entropy training in shuffled batches; the mean loss per epoch."""
    import torch
    from tqdm import tqdm

    module.train()
    losses: list[float] = []
    for _ in tqdm(range(epochs), desc=desc, unit="epoch", disable=not progress, leave=False):
        total, count = 0.0, 0
        for batch in torch.randperm(len(ya), generator=generator).split(batch_size):
            optimiser.zero_grad()
            loss = torch.nn.functional.cross_entropy(module(xa[batch]), ya[batch])
            loss.backward()
            optimiser.step()
            total += loss.item() * len(batch)
            count += len(batch)
        losses.append(total / count)
    return losses


def log_path(out: str | os.PathLike[str]) -> Path:
    """Where `finetune_file` writes the JSON log: ``NEW.onnx`` -> ``NEW.finetune.json``."""
    out = Path(out)
    name = out.name[:-5] if out.name.endswith(".onnx") else out.name
    return out.with_name(name + ".finetune.json")


def finetune_file(model: str | os.PathLike[str], data: str | os.PathLike[str], out: str |
                  os.PathLike[str], *, indices: Any = None, pixel_divisor: float = 255.0,
                  mean: Any = None, std: Any = None,
                  **kwargs: Any) -> tuple[Path, Path, dict[str, Any]]:
    """`finetune` from files: load MODEL and DATA, write OUT (ONNX) and its JSON log.

    `mean` / `std` (per channel) are a normalisation MODEL expects but does not contain
    (`milpverify.runs.normalise`); OUT then contains it, folded into its first layer, so it
    takes pixels / `pixel_divisor` directly. Returns ``(onnx_path, log_path, log)``.
    `kwargs` go to `finetune`.
    """
    from milpverify.frontends.torchnet import export_onnx
    from milpverify.runs.datasets import load_npz
    from milpverify.runs.normalise import check_normalisation, load_network, parse_channels
    norm = check_normalisation(parse_channels("mean", mean), parse_channels("std", std))
    if not str(out).endswith(".onnx"):
        raise InvalidInputError(f"`--out` must name an .onnx file; got {str(out)!r}.")
    if not Path(model).is_file():
        raise InvalidInputError(f"Model file not found: {str(model)!r}.")
    images, labels = load_npz(data, pixel_divisor=pixel_divisor, indices=indices)
    net = load_network(str(model), *(norm or (None, None)))
    new, log = finetune(net, images, labels, pixel_divisor=pixel_divisor, **kwargs)
    log["config"].update({"model": str(model), "data": str(data),
                          "indices": None if indices is None else str(indices),
                          "mean": None if norm is None else list(norm[0]),
                          "std": None if norm is None else list(norm[1])})
    onnx_path = export_onnx(new, out)
    path = log_path(out)
    path.write_text(json.dumps(log, indent=2) + "\n")
    return onnx_path, path, log


__all__ = ["DEFAULT_OPTIONS", "METHODS", "finetune", "finetune_file",
           "log_path"]
