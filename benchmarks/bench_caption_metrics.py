"""Caption metrics speed: vlblocks (pure Python + numpy) vs pycocoevalcap (coco-caption, Java tokenizer).

One process, the same data for both: I images x R references built from coco-fakecap's captions (image i takes the
references and the candidate of fakecap image ``i mod 1000``), taken from ``<repo>/../shared/refdata``. Two
comparisons:

- each scorer on pre-tokenised text (pycocoevalcap's ``Bleu(4)``, ``Cider()``, ``Rouge()`` vs ``bleu`` /
  ``cider_d`` / ``rouge_l`` with ``tokenize=False``); the scores are checked equal first;
- the whole evaluation as a user runs it: pycocoevalcap's ``PTBTokenizer`` on the references and on the candidates
  (two Java calls, JVM start-up included, as ``COCOEvalCap.evaluate`` does) + BLEU + ROUGE-L + CIDEr, vs
  ``vlblocks.metrics.caption_scores`` (tokenisation included).

The variants run round-robin (one run of each per round, after a warm-up run), medians are reported. ``--clock cpu``
times CPU seconds instead of wall seconds (this process's plus its waited-for children's, so the Java tokenizer's
JVM counts for pycocoevalcap): steadier than wall time on a machine shared with other jobs.

    python benchmarks/bench_caption_metrics.py --threads 2
    python benchmarks/bench_caption_metrics.py --threads 1 --clock cpu    # on a loaded machine
    python benchmarks/bench_caption_metrics.py --images 500 --repeats 1    # a quick check
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from vlblocks.metrics import bleu, caption_scores, cider_d, ptb_tokenize_batch, rouge_l

FAKECAP = Path(__file__).resolve().parents[1] / ".." / "shared" / "refdata" / "coco-fakecap"


def load(images: int, refs: int) -> tuple[dict, dict]:
    ann = json.loads((FAKECAP / "captions_val2014_subset.json").read_text())
    res = json.loads((FAKECAP / "captions_val2014_fakecap_results.json").read_text())
    by_image: dict = {img["id"]: [] for img in ann["images"]}
    for a in ann["annotations"]:
        by_image[a["image_id"]].append(a["caption"])
    cand = {r["image_id"]: r["caption"] for r in res}
    ids = [i for i in by_image if len(by_image[i]) >= refs]
    references = {i: by_image[ids[i % len(ids)]][:refs] for i in range(images)}
    candidates = {i: cand[ids[i % len(ids)]] for i in range(images)}
    return references, candidates


def cpu_seconds() -> float:
    """CPU seconds of this process (``time.process_time``, fine-grained) and of its finished children (user +
    system, from ``os.times``, in clock ticks of 10 ms: only pycocoevalcap's Java tokenizer runs there)."""
    t = os.times()
    return time.process_time() + t.children_user + t.children_system


def timed(fns: dict[str, Callable[[], object]], repeats: int, clock: Callable[[], float]) -> dict[str, float]:
    """Median seconds (of ``clock``) of each function, run round-robin after one warm-up run each."""
    for fn in fns.values():
        fn()
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            t0 = clock()
            fn()
            times[name].append(clock() - t0)
    return {k: statistics.median(v) for k, v in times.items()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--images", type=int, default=5000, help="images (default: %(default)s)")
    p.add_argument("--refs", type=int, default=5, help="references per image (default: %(default)s)")
    p.add_argument("--repeats", type=int, default=3, help="timed runs of each variant (default: %(default)s)")
    p.add_argument("--threads", type=int, default=2, help="torch / numpy threads (default: %(default)s)")
    p.add_argument(
        "--clock", choices=["wall", "cpu"], default="wall", help="wall seconds or CPU seconds (with children)"
    )
    args = p.parse_args()
    clock = time.perf_counter if args.clock == "wall" else cpu_seconds
    if not FAKECAP.is_dir():
        raise SystemExit(f"needs the shared reference data at {FAKECAP}")
    if shutil.which("java") is None:
        raise SystemExit("needs java for pycocoevalcap's tokenizer")
    torch.set_num_threads(args.threads)
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.rouge.rouge import Rouge
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    references, candidates = load(args.images, args.refs)
    gts = dict(zip(references, ptb_tokenize_batch(list(references.values()))))
    res = {k: v[0] for k, v in zip(candidates, ptb_tokenize_batch([[c] for c in candidates.values()]))}
    res_l = {k: [v] for k, v in res.items()}

    peer = {
        "BLEU-1..4": lambda: Bleu(4).compute_score(gts, res_l, verbose=0),
        "CIDEr-D": lambda: Cider().compute_score(gts, res_l),
        "ROUGE-L": lambda: Rouge().compute_score(gts, res_l),
    }
    ours = {
        "BLEU-1..4": lambda: bleu(gts, res, tokenize=False),
        "CIDEr-D": lambda: cider_d(gts, res, tokenize=False),
        "ROUGE-L": lambda: rouge_l(gts, res, tokenize=False),
    }
    assert np.allclose(peer["BLEU-1..4"]()[0], ours["BLEU-1..4"]().scores, rtol=0, atol=1e-9)
    assert abs(peer["CIDEr-D"]()[0] - ours["CIDEr-D"]().score) < 1e-9
    assert abs(peer["ROUGE-L"]()[0] - ours["ROUGE-L"]().score) < 1e-9

    def peer_whole() -> dict:
        tok = PTBTokenizer()
        g = tok.tokenize({k: [{"caption": c} for c in v] for k, v in references.items()})
        r = tok.tokenize({k: [{"caption": c}] for k, c in candidates.items()})
        out = dict(zip(["Bleu_1", "Bleu_2", "Bleu_3", "Bleu_4"], Bleu(4).compute_score(g, r, verbose=0)[0]))
        out["ROUGE_L"], out["CIDEr"] = Rouge().compute_score(g, r)[0], Cider().compute_score(g, r)[0]
        return out

    def ours_whole() -> dict:
        return caption_scores(references, candidates).summary()

    a, b = peer_whole(), ours_whole()
    assert all(abs(a[k] - b[k]) < 1e-9 for k in a), (a, b)

    rows = []
    for name in peer:
        t = timed({"peer": peer[name], "ours": ours[name]}, args.repeats, clock)
        rows.append((f"{name} (pre-tokenised)", t["peer"], t["ours"]))
    t = timed({"peer": peer_whole, "ours": ours_whole}, args.repeats, clock)
    rows.append(("whole evaluation (tokenise + BLEU + ROUGE-L + CIDEr-D)", t["peer"], t["ours"]))

    print(
        f"\n{args.images} images x {args.refs} references, threads={args.threads}, {args.clock} clock, "
        f"median of {args.repeats}\n"
    )
    print("| metric | pycocoevalcap (s) | vlblocks (s) | speed-up |")
    print("|---|---|---|---|")
    for name, tp, to in rows:
        print(f"| {name} | {tp:.3f} | {to:.3f} | {tp / to:.1f}x |")


if __name__ == "__main__":
    main()
