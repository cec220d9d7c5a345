"""Train the tiny 3D UNet of the `rankseg-eval` demo and write `rankseg_eval/demo_model.pt`.

Recipe (see README, "rankseg-eval"): LiTS case 117 (128^3 crop shipped by liver-ct-segmentation-package 1.6.0),
HU clipped to [-200, 250] and scaled to [0, 1]; the loss is taken on the training slices only
(`demo.TRAIN_SLICES`, 6 of every 16 axial slices; the held-out slabs and their guard slices never contribute);
MONAI UNet 8-16-32-64 without residual units, batch norm; plain cross-entropy (no Dice loss term, which makes
probabilities over-confident); Adam, lr 3e-3 with cosine decay, 1200 steps of 4 random crops; seed 0; 1 CPU
thread; deterministic algorithms. About 7 CPU-minutes. Run it with the project installed (`pip install -e .`):

    python scripts/train_demo_model.py            # retrain and overwrite the checkpoint
    python scripts/train_demo_model.py --check    # retrain and compare with the shipped checkpoint's weights
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np
import torch

from rankseg_eval import demo

SEED = 0
STEPS = 1200
BATCH = 4
LR = 3e-3
THREADS = 1


def random_crops(
    image: torch.Tensor, label: torch.Tensor, weight: torch.Tensor, gen: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``BATCH`` crops of size ``demo.ROI_SIZE`` at uniform random positions: image, label, loss weight."""
    xs, ys, ws = [], [], []
    for _ in range(BATCH):
        starts = [int(torch.randint(0, s - r + 1, (1,), generator=gen)) for s, r in zip(image.shape, demo.ROI_SIZE)]
        sl = tuple(slice(a, a + r) for a, r in zip(starts, demo.ROI_SIZE))
        xs.append(image[sl])
        ys.append(label[sl])
        ws.append(weight[sl])
    return torch.stack(xs)[:, None], torch.stack(ys), torch.stack(ws)


def train() -> dict[str, torch.Tensor]:
    """Run the recipe and return the trained state dict."""
    torch.set_num_threads(THREADS)
    torch.manual_seed(SEED)
    torch.use_deterministic_algorithms(True)
    gen = torch.Generator().manual_seed(SEED)

    image, label = demo.load_volume()
    x = torch.from_numpy(demo.normalise(image))
    y = torch.from_numpy(label.astype(np.int64))
    weight = torch.zeros(x.shape)
    weight[list(demo.TRAIN_SLICES)] = 1.0  # labels outside the training slices are never used

    network = demo.build_network()
    optimiser = torch.optim.Adam(network.parameters(), lr=LR)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, T_max=STEPS)
    loss_fn = torch.nn.CrossEntropyLoss(reduction="none")
    network.train()
    start = time.perf_counter()
    for step in range(1, STEPS + 1):
        xb, yb, wb = random_crops(x, y, weight, gen)
        loss = (loss_fn(network(xb), yb) * wb).sum() / wb.sum().clamp(min=1.0)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        schedule.step()
        if step % 50 == 0:
            print(f"step {step:4d}  loss {loss.item():.4f}  {time.perf_counter() - start:.0f}s", flush=True)
    return {k: v.detach().clone() for k, v in network.state_dict().items()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="compare with the shipped checkpoint, write nothing")
    args = parser.parse_args()
    state = train()
    digest = demo.state_digest(state)
    if args.check:
        shipped = demo.state_digest(torch.load(demo.CHECKPOINT, map_location="cpu", weights_only=True))
        print(f"retrained {digest}\nshipped   {shipped}")
        return 0 if digest == shipped else 1
    torch.save(state, demo.CHECKPOINT)
    print(f"wrote {demo.CHECKPOINT} ({demo.CHECKPOINT.stat().st_size} bytes), weights sha256 {digest}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
