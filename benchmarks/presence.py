"""Presence: does the default beat argmax where a structure is absent or faint, and what does the check cost?

    python benchmarks/presence.py                  # both parts
    python benchmarks/presence.py --part quality   # calibrated maps only
    python benchmarks/presence.py --part cost --repeat 5

Quality. Calibrated maps (labels drawn from the probabilities themselves), scored per image and class with the
exact expected Dice (``rankseg_plugins.expected_metric``, ``0/0 := 1``) and with the realised Dice against
``--draws`` label draws, averaged over images and classes:

* multiclass: 40 softmax maps of 64x64 with 4 classes (low-resolution logits x4, upsampled); class 3 is "faint"
  (its logits lowered by 10) or "absent" (lowered by 30) in every other image, or never ("model-like");
* multilabel: 100 sigmoid maps of 64x64, "faint" (logits scaled by U[2, 4], shifted by U[-12, -4]: a few expected
  foreground pixels, most images without a pixel above 0.5) and "model-like" (scale U[2, 8], shift U[-8, 0]).

Decoders: argmax (threshold 0.5 for multilabel); ``pruning_prob=0.5`` (the reference's heuristic); the solver's mask
without presence (``ignore_empty=True``: RMA's answer before this rule, in multilabel mode); the default (presence
rule); ``solver="exact"``; and the reference package ``rankseg==0.0.8`` when installed.

Cost. The default decoder against the same decoder without the presence check (``ignore_empty=True``) on
model-like VOC, Cityscapes and CT-sized inputs, median of ``--repeat`` runs, as the extra time over the decode.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from rankseg_plugins import expected_metric, rankseg

DECODERS = {
    "argmax": None,
    "pruning_prob=0.5": dict(pruning_prob=0.5),
    "no presence": dict(ignore_empty=True),
    "default": dict(),
    "exact": dict(solver="exact"),
}


def softmax_maps(n: int, shift: float, seed: int) -> torch.Tensor:
    """``(n, 4, 64, 64)`` float64 softmax maps; class 3 lowered by ``shift`` in every other image."""
    g = torch.Generator().manual_seed(seed)
    logits = F.interpolate(4 * torch.randn(n, 4, 8, 8, generator=g), size=(64, 64), mode="bilinear")
    logits[::2, 3] -= shift
    return logits.softmax(1).double()


def sigmoid_maps(n: int, scale: tuple[float, float], shift: tuple[float, float], seed: int) -> torch.Tensor:
    """``(n, 1, 64, 64)`` float64 sigmoid maps: logits ``N(0, 1) U[scale] + U[shift]`` at 1/8 resolution."""
    g = torch.Generator().manual_seed(seed)
    low = torch.randn(n, 1, 8, 8, generator=g)
    a = scale[0] + (scale[1] - scale[0]) * torch.rand(n, 1, 1, 1, generator=g)
    b = shift[0] + (shift[1] - shift[0]) * torch.rand(n, 1, 1, 1, generator=g)
    return torch.sigmoid(F.interpolate(low * a + b, size=(64, 64), mode="bilinear")).double()


def decode(name: str, probs: torch.Tensor, multiclass: bool) -> torch.Tensor:
    """Masks ``(B, C, H, W)`` bool of one decoder."""
    C = probs.shape[1]
    if name == "rankseg 0.0.8":
        from rankseg import RankSEG as Reference

        out = Reference(metric="dice", output_mode="multiclass" if multiclass else "multilabel").predict(probs)
    elif DECODERS[name] is None:
        out = probs.argmax(1) if multiclass else probs > 0.5
    else:
        out = rankseg(probs, output_mode="multiclass" if multiclass else "multilabel", **DECODERS[name])
    return F.one_hot(out, C).permute(0, 3, 1, 2).bool() if multiclass else out


def realised_dice(masks: torch.Tensor, probs: torch.Tensor, multiclass: bool, draws: int, seed: int) -> torch.Tensor:
    """Mean over ``draws`` label draws of the per-image, per-class Dice ``(B, C)``, ``0/0 := 1``."""
    g = torch.Generator().manual_seed(seed)
    B, C = probs.shape[:2]
    total = torch.zeros(B, C, dtype=torch.float64)
    for _ in range(draws):
        if multiclass:
            flat = probs.permute(0, 2, 3, 1).reshape(-1, C)
            y = torch.multinomial(flat, 1, generator=g).view(B, *probs.shape[2:])
            truth = F.one_hot(y, C).permute(0, 3, 1, 2).bool()
        else:
            truth = torch.rand(probs.shape, generator=g, dtype=probs.dtype) < probs
        inter = (masks & truth).sum((2, 3)).double()
        den = (masks.sum((2, 3)) + truth.sum((2, 3))).double()
        total += torch.where(den > 0, 2 * inter / den.clamp_min(1), torch.ones_like(den))
    return total / draws


def quality(draws: int) -> None:
    names = list(DECODERS)
    try:
        import rankseg  # noqa: F401

        names.append("rankseg 0.0.8")
    except ImportError:
        print("(reference package rankseg not installed: skipping it)")
    datasets = [
        ("multiclass, class 3 faint in half", softmax_maps(40, 10.0, 0), True),
        ("multiclass, class 3 absent in half", softmax_maps(40, 30.0, 1), True),
        ("multiclass, model-like", softmax_maps(40, 0.0, 4), True),
        ("multilabel, faint", sigmoid_maps(100, (2, 4), (-12, -4), 2), False),
        ("multilabel, model-like", sigmoid_maps(100, (2, 8), (-8, 0), 3), False),
    ]
    print(f"{'maps':<38}{'decoder':<18}{'E[Dice]':>9}{'class 3':>9}{'realised':>10}{'vs argmax':>11}{'vs exact':>11}")
    for title, probs, multiclass in datasets:
        rows = {}
        for name in names:
            masks = decode(name, probs, multiclass)
            e = expected_metric(probs, masks)
            rows[name] = (e.mean().item(), e[:, -1].mean().item(), realised_dice(masks, probs, multiclass, draws, 7).mean().item())
        for name, (e, last, r) in rows.items():
            print(f"{title:<38}{name:<18}{e:>9.4f}{last:>9.4f}{r:>10.4f}{e - rows['argmax'][0]:>+11.4f}"
                  f"{e - rows['exact'][0]:>+11.1e}")
        print()


def model_like(shape: tuple[int, ...]) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    low = tuple(max(1, n // 16) for n in shape[2:])
    logits = 4.0 * torch.randn(*shape[:2], *low, generator=g)
    mode = "bilinear" if len(low) == 2 else "trilinear"
    return F.interpolate(logits, size=shape[2:], mode=mode, align_corners=False).softmax(1)


def cost(repeat: int) -> None:
    print(f"{'case':<12}{'default ms':>11}{'no presence ms':>16}{'presence share':>16}")
    for case, shape in [("voc", (4, 21, 512, 512)), ("cityscapes", (2, 19, 512, 1024)), ("ct", (1, 3, 256, 256, 160))]:
        probs = model_like(shape)
        times: dict[str, list[float]] = {"default": [], "none": []}
        for options, key in ((dict(), "default"), (dict(ignore_empty=True), "none")):
            rankseg(probs, **options)
        for _ in range(repeat):  # interleaved, so both see the same machine
            for options, key in ((dict(), "default"), (dict(ignore_empty=True), "none")):
                start = time.perf_counter()
                rankseg(probs, **options)
                times[key].append(time.perf_counter() - start)
        full, bare = statistics.median(times["default"]), statistics.median(times["none"])
        print(f"{case:<12}{full * 1e3:>11.1f}{bare * 1e3:>16.1f}{(full - bare) / full:>16.1%}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--part", choices=["quality", "cost", "both"], default="both")
    parser.add_argument("--draws", type=int, default=20, help="label draws per map for the realised Dice")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.part in ("quality", "both"):
        quality(args.draws)
    if args.part in ("cost", "both"):
        cost(args.repeat)


if __name__ == "__main__":
    main()
