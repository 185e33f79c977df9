"""Train a CLIP student with Knowledge-CLIP from Python, with open_clip-style flags: every option of
`kclip train` (kclip.TrainConfig's fields) is a flag here too, and the same C++ trainer runs.

    python3 examples/python/train_knowledge_clip.py --train-data pairs.csv --csv-img-key image \
        --csv-caption-key caption --model tiny --teacher-cache cache --concepts concepts.safetensors \
        --batch-size 32 --epochs 2 --logs runs --name example [--plot loss.png]

Under torchrun (torch.distributed's default group is used when initialised):
    torchrun --nproc-per-node 2 examples/python/train_knowledge_clip.py --distributed ...
"""
import argparse
import json

import kclip


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    defaults = kclip.TrainConfig().to_dict()
    for key, default in defaults.items():
        flag = "--" + key.replace("_", "-")
        if isinstance(default, bool):
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=default)
        else:
            parser.add_argument(flag, type=type(default), default=default)
    parser.add_argument("--config", help="a JSON file of options (flags given here win)")
    parser.add_argument("--distributed", action="store_true", help="init torch.distributed (gloo) from torchrun")
    parser.add_argument("--plot", help="write the loss curves to this PNG at the end")
    return parser, parser.parse_args()


def main():
    parser, args = parse_args()
    config = kclip.TrainConfig.from_json(args.config) if args.config else kclip.TrainConfig()
    for key in kclip.TrainConfig.keys():
        value = getattr(args, key)
        if value != parser.get_default(key) or not args.config:
            setattr(config, key, value)
    if args.distributed:
        import torch.distributed as dist
        dist.init_process_group("gloo")
    trainer = kclip.Trainer(config)
    last = trainer.fit()
    if trainer.rank == 0:
        print(json.dumps({"run": str(trainer.run_dir), "steps": trainer.step, **last}))
        if args.plot:
            kclip.plot_metrics(trainer.run_dir / "metrics.jsonl", args.plot)
            print("wrote", args.plot)


if __name__ == "__main__":
    main()
