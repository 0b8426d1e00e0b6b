"""Time of folding new users into the main job's hybrid (ML-100K): ``python bench/foldin_time.py --encoder mamba``.

Training is skipped (``train_loop`` replaced by a no-op): fold-in cost does not depend on the weights, and
the tensors and the code path are those of a trained run. Each new user comes with 3 ratings and side
information, as in the README's ``ghrs.recommend`` example. Prints wall and CPU seconds per user.
"""

from __future__ import annotations

import argparse
import time

import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

from ghrs.models import hybrid
from ghrs.paths import config_dir
from ghrs.serving import recommend
from ghrs.training import TrainState


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--encoder", default="mamba")
    parser.add_argument("--users", type=int, default=3, help="new users folded in one after the other")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    hybrid.train_loop = lambda *a, **k: TrainState()  # see the module docstring
    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        cfg = compose("train", overrides=[f"encoder={args.encoder}", "model.base_folds=1"])
    ds = instantiate(cfg.dataset, _convert_="all")
    split = instantiate(cfg.split)(ds)
    model = instantiate(cfg.model, _convert_="all").fit(ds, split.train, split.valid)
    for n in range(args.users):
        t0, c0 = time.perf_counter(), time.process_time()
        recommend(model, [990_000 + n], k=10, history=[[50, 5], [172, 4], [181, 5]], side={"age": 30, "gender": "F"})
        print(f"{args.encoder}: new user {n}: {time.perf_counter() - t0:.2f} s wall, "
              f"{time.process_time() - c0:.2f} s CPU")


if __name__ == "__main__":
    main()
