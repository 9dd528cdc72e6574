"""Options every benchmark takes, and the thread setting they share (steady ratios on a shared CPU)."""

import torch


def add_common_arguments(parser) -> None:
    """``--device --threads --seed --json``."""
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--threads", type=int, default=None,
                        help="torch.set_num_threads; default 1 on cpu (steady ratios on a shared machine), "
                             "0 keeps torch's default")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", default=None, help="write the results here")


def apply_threads(args) -> None:
    """One torch thread on CPU unless ``--threads`` says otherwise."""
    if args.threads is None:
        args.threads = 1 if args.device == "cpu" else 0
    if args.threads:
        torch.set_num_threads(args.threads)
