"""Learning-rate sweep for the query-side experts and the multi-task baseline, then the choice of what to ship.

``train``: for each learning rate (and batch size), train every domain's expert and the multi-task baseline with no
time budget (early stopping on each one's held-out slice decides; ``--epochs`` caps it), keeping each shipped
expert's other settings (its manifest's config). Every candidate holds out the same slice as the shipped expert
(seed 0), so their held-out scores compare. Meant for a GPU (three learning rates at batch 32: 21 runs took 436 s
on one H200 without a judging slice, 19 runs 514 s on one H100 with one; on a 2-core CPU, hours); ``--deadline``
stops starting new runs after that many seconds, and ``--points``/``--skip`` finish a sweep it cut short. Writes
``results.json`` and one adapter folder per candidate under ``--out``.

    RR_DEVICE=cuda python scripts/sweep_experts.py train --data ../shared/data/beir --out /tmp/sweep

``decide``: per expert, the candidate with the best score replaces the shipped one only if it is higher by more than
``--min-gain`` (the measurement noise between machines: the base model's own score on these slices moved by up to
0.0013 between the CPU and the GPU); ``--apply`` copies the winners into ``experts/``. Writes the table to
``benchmarks/results/expert_sweep_query.json``. Candidates trained with a judging slice (``--judge-fraction``, the
default) are judged on it, against the candidate trained with the shipped expert's learning rate and batch size: no
candidate was stopped on that slice, so the comparison is fair. The gain must also pass a paired randomization test
over the slice's queries (``--max-p``): on MED's two or CACM's three judging queries one query decides any gap.
Without one (``--judge-fraction 0``) the best early-stopping score is compared with the shipped expert's, which
flatters the candidates: each is the best of several epochs on that same slice (the first sweep, recorded in the
README, learned this).

    python scripts/sweep_experts.py decide --sweep /tmp/sweep --apply
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from core.settings import get_settings  # noqa: E402  (after the path insert)
from router.significance import PairedResult  # noqa: E402
from router.workbench import MULTI_TASK, baseline_dir, registry_for  # noqa: E402

GRID = [(5e-4, 32), (2e-4, 32), (1e-3, 32), (5e-4, 128), (1e-3, 128), (2e-4, 128)]
KEEP = ("patience", "real_share", "max_repeats", "val_real_weight")  # a shipped expert's settings that carry over


def shipped_dir(name: str) -> Path:
    s = get_settings()
    return baseline_dir(s, "query") if name == MULTI_TASK else registry_for(s, "query").root / name


def train(args: argparse.Namespace) -> None:
    from ingest.beir import discover, load_dataset
    from router.encoders import TextEncoder
    from router.training.data import domain_data
    from router.training.trainer import TrainConfig, train_expert

    t0 = time.monotonic()
    s = get_settings()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    dss = [load_dataset(p, ("train",)) for p in discover(args.data) if not args.only or p.name in args.only]
    points = args.points or GRID[: args.grid]
    unknown = args.skip - {f"{n}-lr{lr:g}-bs{bs}" for lr, bs in points for n in [*(d.name for d in dss), MULTI_TASK]}
    if unknown:
        raise SystemExit(f"--skip names runs this sweep would not make: {sorted(unknown)}")
    enc = TextEncoder(s.base_model, batch_size=256, bf16=s.bf16, cache=None, device=s.device)
    fingerprint = args.fingerprint or enc.base_fingerprint
    docs = {ds.name: enc.encode([d.full_text for d in ds.corpus], None, "document") for ds in dss}
    print(f"base documents encoded in {time.monotonic() - t0:.0f}s", flush=True)
    data = {ds.name: domain_data(ds) for ds in dss}
    results: list[dict[str, Any]] = []
    for lr, bs in points:
        for name in [*data, MULTI_TASK]:
            if time.monotonic() - t0 > args.deadline:
                break
            if f"{name}-lr{lr:g}-bs{bs}" in args.skip:
                continue
            manifest = shipped_dir(name) / "manifest.json"
            own = json.loads(manifest.read_text())["training"]["config"] if manifest.is_file() else {}
            cfg = TrainConfig(
                sides="query",
                lr=lr,
                batch_size=bs,
                max_epochs=args.epochs,
                time_budget_s=1e9,
                query_max_length=s.query_max_length,
                doc_max_length=s.doc_max_length,
                device=s.device,
                bf16=s.bf16,  # the precision the base documents above were encoded with, as `rr experts train`
                judge_fraction=args.judge_fraction,
                **{k: own[k] for k in KEEP if k in own},
            )
            tag = f"{name}-lr{lr:g}-bs{bs}"
            t = time.monotonic()
            r = train_expert(
                s.base_model,
                fingerprint,
                list(data.values()) if name == MULTI_TASK else [data[name]],
                out / tag,
                name=name,
                domain="all" if name == MULTI_TASK else name,
                cfg=cfg,
                doc_matrices=docs,
            )
            row = {
                "tag": tag,
                "name": name,
                "lr": lr,
                "batch_size": bs,
                "seconds": round(time.monotonic() - t, 1),
                "val": r.manifest.scores,
                "best_epoch": r.manifest.training["best_epoch"],
                "epochs_run": r.manifest.training["epochs_run"],
                "stopped_by": r.manifest.training["stopped_by"],
                "judge_per_query": r.manifest.training.get("judge_per_query", {}),
            }
            results.append(row)
            print(json.dumps(row), flush=True)
            (out / "results.json").write_text(json.dumps(results, indent=1))
    print(f"done: {len(results)} runs in {time.monotonic() - t0:.0f}s")


def judged_test(cand: dict[str, Any], control: dict[str, Any]) -> PairedResult:
    """The candidate against the control, query by query on the judging slice they share (the same seed draws the
    same slice): a gain that one or two queries make on a small domain is not a gain."""
    from router.significance import paired_test

    a, b = cand["judge_per_query"], control["judge_per_query"]
    if not a or sorted(a) != sorted(b) or any(sorted(a[d]) != sorted(b[d]) for d in a):
        raise SystemExit(f"{cand['tag']} and {control['tag']} were not judged on the same queries")
    return paired_test({d: [a[d][q] for q in sorted(a[d])] for d in a}, {d: [b[d][q] for q in sorted(a[d])] for d in a})


def decide(args: argparse.Namespace) -> None:
    sweep = Path(args.sweep)
    results = json.loads((sweep / "results.json").read_text())
    table: dict[str, Any] = {}
    for name in sorted({r["name"] for r in results}):
        target = shipped_dir(name)
        shipped = json.loads((target / "manifest.json").read_text())
        cands = [r for r in results if r["name"] == name]
        own = shipped["training"]["config"]
        control = [r for r in cands if r["lr"] == own["lr"] and r["batch_size"] == own["batch_size"]]
        judged = all("judge_ndcg@10" in r["val"] for r in cands) and bool(control)
        key = "judge_ndcg@10" if judged else "val_ndcg@10"
        best = max(cands, key=lambda r: r["val"][key])
        against = control[0]["val"][key] if judged else shipped["scores"]["val_ndcg@10"]
        gain = best["val"][key] - against
        test = judged_test(best, control[0]) if judged and best is not control[0] else None
        passes = gain > args.min_gain and (test is None or test.p_value < args.max_p)
        table[name] = {
            "shipped": {
                "val_ndcg@10": shipped["scores"]["val_ndcg@10"],
                "lr": shipped["training"]["config"]["lr"],
                "budget_s": shipped["training"]["config"]["time_budget_s"],
                "stopped_by": shipped["training"]["stopped_by"],
            },
            "judged_on": "judging slice, against the shipped settings retrained" if judged else "early-stopping slice",
            "candidates": {r["tag"]: r["val"][key] for r in cands},
            "best": best["tag"],
            "gain": round(gain, 4),
            "paired_test_vs_control": test.to_json() if test else None,
            "passes_rule": passes,
        }
        print(
            f"{name:12} {'control' if judged else 'shipped'} {against:.4f}  best {best['tag']:28} "
            f"{best['val'][key]:.4f}  {gain:+.4f}  p {test.p_value if test else float('nan'):.3f}  "
            f"{'replace' if passes else 'keep'}  ({key})"
        )
        if args.apply and passes:
            tmp = target.with_name(f".{target.name}.tmp")
            shutil.rmtree(tmp, ignore_errors=True)
            shutil.copytree(sweep / best["tag"], tmp)
            # peft records the path the base was loaded from on the training machine; keep the shipped one's
            cfg_path = tmp / "adapter_config.json"
            adapter_cfg = json.loads(cfg_path.read_text())
            shipped_cfg = json.loads((target / "adapter_config.json").read_text())
            adapter_cfg["base_model_name_or_path"] = shipped_cfg["base_model_name_or_path"]
            cfg_path.write_text(json.dumps(adapter_cfg, indent=2) + "\n")
            m = json.loads((tmp / "manifest.json").read_text())
            m["training"]["trained_on"] = args.trained_on
            (tmp / "manifest.json").write_text(json.dumps(m, indent=2) + "\n")
            shutil.rmtree(target)
            tmp.rename(target)
    out = {
        "min_gain": args.min_gain,
        "max_p": args.max_p,
        "grid": [r["tag"].split("-", 1)[1] for r in results if r["name"] == MULTI_TASK],
        "experts": table,
    }
    Path(args.json).write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {args.json}")


def compare(args: argparse.Namespace) -> None:
    """Each chosen candidate against the shipped expert on its domain's ``--split``: a paired test per domain."""
    from ingest.beir import load_dataset
    from router.significance import paired_test
    from router.workbench import Workbench, make_encoder

    table = json.loads(Path(args.json).read_text())["experts"]
    enc = make_encoder(get_settings())
    rows: dict[str, Any] = {}
    for name, row in table.items():
        if name == MULTI_TASK or not row["passes_rule"]:
            continue
        enc.add_expert(f"{name}-shipped", shipped_dir(name))
        enc.add_expert(f"{name}-candidate", Path(args.sweep) / row["best"])
        ds = load_dataset(Path(args.data) / name, (args.split,))
        wb = Workbench(enc, "query")
        qids, _ = wb.query_matrix(ds, args.split, None)
        cand = wb.score(ds, args.split, f"{name}-candidate").per_query
        ship = wb.score(ds, args.split, f"{name}-shipped").per_query
        r: dict[str, Any] = paired_test({name: [cand[q] for q in qids]}, {name: [ship[q] for q in qids]}).to_json()
        rows[name] = {"queries": len(qids), **r}
        lo, hi = r["ci95"]
        print(
            f"{name:10} {len(qids):4} queries  candidate - shipped {100 * r['diff']:+.1f} [{100 * lo:+.1f}, "
            f"{100 * hi:+.1f}]  p {r['p_value']:.3f}  won/lost/tied {r['wins']}/{r['losses']}/{r['ties']}"
        )
    out = json.loads(Path(args.json).read_text())
    out[f"candidate_vs_shipped_{args.split}"] = rows
    Path(args.json).write_text(json.dumps(out, indent=2) + "\n")


def grid_points(value: str) -> list[tuple[float, int]]:
    """``LR:BATCH,...`` as (learning rate, batch size) pairs."""
    out = []
    for point in value.split(","):
        lr, sep, bs = point.partition(":")
        try:
            out.append((float(lr), int(bs)))
        except ValueError:
            raise argparse.ArgumentTypeError(f"{point!r} is not LR:BATCH (e.g. 2e-4:32)") from None
        if not sep or out[-1][0] <= 0 or out[-1][1] < 1:
            raise argparse.ArgumentTypeError(f"{point!r} is not LR:BATCH with a positive rate and batch")
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("train")
    t.add_argument("--data", type=Path, default=Path("../shared/data/beir"))
    t.add_argument("--out", type=Path, required=True)
    t.add_argument("--only", type=lambda v: v.split(","), default=None)
    t.add_argument("--grid", type=int, default=len(GRID), help="how many points of the grid, in its order")
    t.add_argument(
        "--points",
        type=grid_points,
        default=None,
        help="LR:BATCH,... instead of the grid (e.g. to finish a sweep a deadline cut short)",
    )
    t.add_argument("--skip", type=lambda v: set(v.split(",")), default=set(), help="candidate tags already trained")
    t.add_argument("--epochs", type=int, default=15)
    t.add_argument("--deadline", type=float, default=float("inf"), help="seconds after which no run starts")
    t.add_argument("--judge-fraction", type=float, default=0.1, help="real queries no candidate is stopped on")
    t.add_argument("--fingerprint", default=None, help="record this base fingerprint (a copy of the base model)")
    d = sub.add_parser("decide")
    d.add_argument("--sweep", type=Path, required=True)
    d.add_argument("--min-gain", type=float, default=0.002)
    d.add_argument("--max-p", type=float, default=0.05, help="a judged gain must also pass a paired test at this p")
    d.add_argument("--apply", action="store_true")
    d.add_argument("--trained-on", default="a GPU, no time budget (early stopping decides)")
    d.add_argument("--json", type=Path, default=ROOT / "benchmarks" / "results" / "expert_sweep_query.json")
    c = sub.add_parser("compare")
    c.add_argument("--sweep", type=Path, required=True)
    c.add_argument("--data", type=Path, default=Path("../shared/data/beir"))
    c.add_argument("--split", default="test")
    c.add_argument("--json", type=Path, default=ROOT / "benchmarks" / "results" / "expert_sweep_query.json")
    args = p.parse_args()
    {"train": train, "decide": decide, "compare": compare}[args.cmd](args)


if __name__ == "__main__":
    main()
