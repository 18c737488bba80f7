"""The attribute-channel SAE of bench_recommender.py on the challenge layout: the demo's skus of 2022-09-22.

bench_recommender.py measures it on MovieLens-100k's genres; this asks whether it carries over to category and price
band labels. It generates the demo's source (as `ubp demo` does), ingests it and builds the day's sequences with the
core functions the assets call, then per seed trains SASRec with the pipeline's recipe, the pipeline's SAE (stages.py)
and the attribute-channel SAE, and steers every label of each by the feature that writes it best (add mode; for the
pipeline's SAE also the label's concept_direction), on 2,000 sampled users as the steering_report asset does.
Writes bench/results/channel_demo.json and .md.

    PYTHONPATH=. python bench/bench_channel_demo.py [--seeds 0 1] [--jobs 2]
"""

from __future__ import annotations

import argparse
import json
from concurrent.futures import ProcessPoolExecutor
from datetime import date, timedelta
from pathlib import Path

import pandas as pd
from bench_recommender import CHANNEL_SAE, attribute_channel
from hardware import describe, load_average

from ubp_pipeline.cli import DEMO_USERS
from ubp_pipeline.core.common.atomic import atomic_path
from ubp_pipeline.core.common.device import make_runtime
from ubp_pipeline.core.recommender import stages
from ubp_pipeline.core.recommender.item_sequences import leave_one_out
from ubp_pipeline.core.recommender.sasrec_training import train_sasrec
from ubp_pipeline.core.recommender.sku_sequences import build_sku_sequences
from ubp_pipeline.core.recommender.steering import CONCEPT_DIRECTION, reached_within_cost, steering_report
from ubp_pipeline.core.sequences.user_sequences import SequenceSpec, build_sequences
from ubp_pipeline.core.warehouse.database import connect_warehouse
from ubp_pipeline.core.warehouse.events import EVENT_TYPES
from ubp_pipeline.core.warehouse.ingest import ingest_event_tables, ingest_product_properties
from ubp_pipeline.core.warehouse.source_layout import SourceLayout
from ubp_pipeline.data.synthetic import SyntheticConfig, generate
from ubp_pipeline.models.sae import SAEConfig
from ubp_pipeline.models.sasrec import SASRecConfig
from ubp_pipeline.settings import DEMO_DAYS, DEMO_FIRST_DAY

RESULTS = Path(__file__).parent / "results"
WORK = Path(__file__).parent / "tmp" / "channel_demo"
AS_OF = date(2022, 9, 22)  # the day README's demo recommender figures are measured on
STEERED_USERS = 2_000
HOLDOUT_USERS = 0.1  # stages.train_dictionary's default, as in the pipeline


def demo_sequences() -> Path:
    """The demo's user_sequences partition of AS_OF (built once, kept in bench/tmp)."""
    folder = WORK / "user_sequences"
    if not (folder / "manifest.json").exists():
        source = WORK / "source"
        generate(SyntheticConfig(users=DEMO_USERS, days=DEMO_DAYS, start=DEMO_FIRST_DAY, seed=0), source)
        last_day = DEMO_FIRST_DAY + timedelta(days=DEMO_DAYS - 1)
        with connect_warehouse(WORK / "warehouse.duckdb") as con:
            ingest_product_properties(con, SourceLayout(source))
            ingest_event_tables(con, SourceLayout(source), EVENT_TYPES, DEMO_FIRST_DAY, last_day)
        with connect_warehouse(WORK / "warehouse.duckdb", read_only=True) as con:
            build_sequences(con, SequenceSpec(as_of=AS_OF, first_day=DEMO_FIRST_DAY), folder)
    return folder


def run_seed(seed: int, sequences: Path) -> dict:
    split = leave_one_out(build_sku_sequences(sequences))
    runtime = make_runtime("cpu", seed=seed, threads=1)
    model = train_sasrec(
        split, SASRecConfig(n_items=split.test.n_items, **stages.SASREC_DEFAULTS), stages.SASREC_TRAINING, runtime
    ).model
    users = stages.sample_users(split.test.n_users, STEERED_USERS, seed)
    layer = model.config.n_blocks
    sae_config = SAEConfig(d_in=model.config.d_model, **stages.SAE_DEFAULTS)
    dictionary = stages.train_dictionary(
        model, split, layer, sae_config, stages.SAE_TRAINING, runtime, holdout_users=HOLDOUT_USERS
    )
    annotations = stages.annotate_layer(dictionary.sae, dictionary.holdout, split, subject="next", seed=seed)
    pipeline = steering_report(
        model, dictionary.sae, layer, annotations.sae_features, split.test, modes=("add", CONCEPT_DIRECTION),
        users=users, device=runtime.device,
    )  # fmt: skip
    channel = attribute_channel(model, split, runtime, HOLDOUT_USERS, users)["steering"]
    channel = channel[channel["mode"] == "add"]
    return {
        "seed": seed,
        "users": int(split.test.n_users),
        "steering": pd.concat([pipeline.assign(sae="pipeline"), channel.assign(sae="attribute channel")]).to_dict(
            orient="records"
        ),
    }


def summary(runs: list[dict]) -> pd.DataFrame:
    """Per seed, SAE and mode: labels steered, those doubled within 10 % NDCG cost, the median relative cost."""
    rows = pd.DataFrame([row | {"seed": run["seed"]} for run in runs for row in run["steering"]])
    rows["within_10%_cost"] = reached_within_cost(rows)
    return (
        rows.groupby(["seed", "sae", "mode"], sort=False)
        .agg(
            labels=("label", "size"),
            within_10_percent_cost=("within_10%_cost", "sum"),
            median_relative_ndcg_cost=("relative_ndcg_cost", "median"),
            median_output_auroc=("output_auroc", "median"),
        )
        .reset_index()
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--jobs", type=int, default=2, help="seeds at once, one torch thread each")
    args = parser.parse_args()
    load_before = load_average()
    sequences = demo_sequences()
    with ProcessPoolExecutor(args.jobs) as pool:
        runs = list(pool.map(run_seed, args.seeds, [sequences] * len(args.seeds)))
    table = summary(runs)
    hardware = describe(1, load_before)
    record = {
        "hardware": hardware,
        "channel_sae": CHANNEL_SAE,
        "runs": runs,
        "summary": table.to_dict(orient="records"),
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    with atomic_path(RESULTS / "channel_demo.json") as tmp:
        tmp.write_text(json.dumps(record, default=float) + "\n")
    text = (
        f"# The attribute-channel SAE on the demo's skus of {AS_OF}\n\n"
        f"{hardware['cpu_model']}, {hardware['cores']} cores, {args.jobs} seed(s) at once on 1 torch thread each; "
        f"load average {hardware['load_average_before']} before, {hardware['load_average_after']} after. The demo's "
        f"source ({DEMO_USERS:,} generated users), SASRec with the pipeline's recipe on {runs[0]['users']:,} users' "
        f"skus, the pipeline's SAE ({stages.SAE_DEFAULTS}) after the last block and the attribute-channel SAE "
        f"({CHANNEL_SAE}, on the {SASRecConfig.attribute_dims} attribute coordinates of the normalised output); each "
        f"label (category or price band) steered by the feature that writes it best, on {STEERED_USERS:,} sampled "
        "users; a label counts when its top-10 share doubled (at least 2 in 10) at no more than 10 % relative "
        "NDCG@10 cost.\n\n"
        f"{table.to_markdown(index=False, floatfmt='.3f')}\n\n"
        "`PYTHONPATH=. python bench/bench_channel_demo.py` (every steered label in the JSON)\n"
    )
    with atomic_path(RESULTS / "channel_demo.md") as tmp:
        tmp.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
