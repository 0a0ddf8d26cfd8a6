"""Where a step of the default VQA recipe spends its time: data generation, collate, forward, backward, optimizer,
evaluation. Run: python benchmarks/profile_vqa_step.py --threads 2 [recipe flags]; prints a markdown table."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))
import vqa_train as R  # noqa: E402

from vlblocks import training as T  # noqa: E402
from vlblocks.data import VQACollator  # noqa: E402
from vlblocks.models import VQAPreset, build_vqa_model  # noqa: E402


def main() -> None:
    argv = [a for a in sys.argv[1:]]
    steps = 30
    args = R.parse_args(["--output-dir", "/tmp/profile-vqa", *argv])
    torch.set_num_threads(args.threads or 2)
    dist = T.setup_distributed(device="cpu")
    Path(args.output_dir).mkdir(parents=True, exist_ok=True)
    times: dict[str, float] = {}
    t = time.perf_counter()
    train, val, records, vocab, tok = R.build_data(args, Path(args.output_dir), dist)
    groups = R.image_groups(records)
    per_batch = max(1, round(args.batch_size * len(groups) / len(records)))
    batches = T.shard_batches(groups, per_batch=per_batch, seed=0, epoch=0)
    _ = [train[i] for b in batches[:2] for i in b]  # touch the lazy parts
    times["data (once)"] = time.perf_counter() - t
    model = build_vqa_model(VQAPreset.from_dict(vars(args)), num_answers=len(vocab), tokenizer=tok)
    cfg = model.image_encoder.image_config
    collate = VQACollator(
        model.text_encoder.tokenizer, vocab, image_config=cfg, max_length=args.max_length, group_images=True
    )
    opt = T.build_optimizer(model, lr=args.lr, weight_decay=args.weight_decay)
    acc = dict.fromkeys(("items", "collate", "forward", "backward", "optimizer"), 0.0)
    for s in range(steps):
        t0 = time.perf_counter()
        items = [train[i] for i in batches[s % len(batches)]]
        t1 = time.perf_counter()
        batch = collate(items)
        t2 = time.perf_counter()
        loss = R.compute_loss(R.forward(model, batch), batch, args, None)
        t3 = time.perf_counter()
        opt.zero_grad()
        loss.backward()
        t4 = time.perf_counter()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        t5 = time.perf_counter()
        if s >= 5:
            for k, a, b in (
                ("items", t0, t1),
                ("collate", t1, t2),
                ("forward", t2, t3),
                ("backward", t3, t4),
                ("optimizer", t4, t5),
            ):
                acc[k] += b - a
    n = steps - 5
    per_step = {f"{k} (ms/step)": 1000 * v / n for k, v in acc.items()}
    t = time.perf_counter()
    R.evaluate(model, val, collate, vocab, args, dist)
    times["evaluation (s/epoch)"] = time.perf_counter() - t
    step_ms = sum(per_step.values())
    rows = [{"part": k, "value": v} for k, v in {**times, **per_step}.items()]
    rows.append({"part": "step total (ms)", "value": step_ms})
    rows.append({"part": f"epoch estimate (s), {len(batches)} steps", "value": step_ms * len(batches) / 1000})
    print(T.format_table(rows, precision=2))


if __name__ == "__main__":
    main()
