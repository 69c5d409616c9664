"""SAELens peer of `saes_over_training`: a TopK SAE for each checkpoint of a TMS run, one after another, as a
SAELens user trains them (SAETrainer on an iterator of activations; the checkpoint's hidden layer h = W x
computed in torch from sparse features drawn as mi_jax's task draws them: each feature on with probability p,
its value uniform in [0, 1)). Prints one JSON line: s_total (every SAE, setup included), sae_steps_per_s,
and each SAE's mse (per element) and L0 on an evaluation set of 4 batches.

    /tmp/peer-sae/bin/python benchmarks/peers/saelens_saes.py --series W.npy --p 0.05 --d-sae 40 --k 2 \
        --steps 500 --batch 256 --lr 1e-3 --threads 2 [--save out.npz]
"""

import argparse
import json
import os
import time

os.environ.setdefault("TQDM_DISABLE", "1")  # SAETrainer's progress bar, per SAE

import numpy as np  # noqa: E402
import torch  # noqa: E402
from sae_lens.config import LoggingConfig, SAETrainerConfig  # noqa: E402
from sae_lens.saes.topk_sae import TopKTrainingSAE, TopKTrainingSAEConfig  # noqa: E402
from sae_lens.training.sae_trainer import SAETrainer  # noqa: E402


def activations(W: torch.Tensor, p: float, batch: int, generator: torch.Generator):
    n_features = W.shape[1]
    while True:
        on = torch.rand(batch, n_features, generator=generator) < p
        x = torch.rand(batch, n_features, generator=generator) * on
        yield x @ W.T  # [batch, hidden]


def train_one(W: torch.Tensor, args, seed: int) -> tuple[float, float]:
    torch.manual_seed(seed)
    cfg = TopKTrainingSAEConfig(d_in=W.shape[0], d_sae=args.d_sae, k=args.k, aux_loss_coefficient=1 / 32,
                                decoder_init_norm=None)
    sae = TopKTrainingSAE(cfg)
    trainer_cfg = SAETrainerConfig(
        total_training_samples=args.steps * args.batch, train_batch_size_samples=args.batch, lr=args.lr,
        lr_end=args.lr, lr_scheduler_name="constant", adam_beta1=0.9, adam_beta2=0.999, device="cpu",
        dead_feature_window=200, feature_sampling_window=2000,
        logger=LoggingConfig(log_to_wandb=False, eval_every_n_wandb_logs=2**31 - 1))
    generator = torch.Generator().manual_seed(seed)
    SAETrainer(cfg=trainer_cfg, sae=sae, data_provider=activations(W, args.p, args.batch, generator)).fit()
    with torch.no_grad():
        x = torch.cat([next(activations(W, args.p, args.batch, torch.Generator().manual_seed(10_000 + i)))
                       for i in range(4)])
        f = sae.encode(x)
        mse = float(((sae.decode(f) - x) ** 2).mean())
        l0 = float((f > 0).float().sum(-1).mean())
    return mse, l0


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--series", required=True, help="W of every checkpoint, [time, hidden, feat] (.npy)")
    parser.add_argument("--p", type=float, required=True)
    parser.add_argument("--d-sae", type=int, required=True)
    parser.add_argument("--k", type=int, required=True)
    parser.add_argument("--steps", type=int, required=True)
    parser.add_argument("--batch", type=int, required=True)
    parser.add_argument("--lr", type=float, required=True)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--save")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    series = torch.tensor(np.load(args.series), dtype=torch.float32)
    start = time.perf_counter()
    results = [train_one(W, args, seed=t) for t, W in enumerate(series)]
    seconds = time.perf_counter() - start
    mse, l0 = (np.asarray(v) for v in zip(*results))
    if args.save:
        np.savez(args.save, mse=mse, l0=l0)
    print(json.dumps({"s_total": seconds, "sae_steps_per_s": len(series) * args.steps / seconds,
                      "mse_median": float(np.median(mse)), "l0_median": float(np.median(l0))}))


if __name__ == "__main__":
    main()
