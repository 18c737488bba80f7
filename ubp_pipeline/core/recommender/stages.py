"""The interpretable recommender's four stages, each twice: in memory (a split in, figures out: what the MovieLens
benchmark calls) and over folders (read the previous stage's folder, write one: what the assets call).

1. ``train_recommender`` / ``fit_recommender``: SASRec on item sequences, scored by leave-one-out full ranking
   (HR@10 / NDCG@10 over all items) next to popularity, item-to-item transitions and a blend of SASRec with them;
   the model that ranks validation users best is the one served.
2. ``train_dictionary`` / ``fit_dictionary``: a TopK SAE on one layer's hidden states over the training sequences;
   explained variance, L0 and dead latents on held-out users, NDCG@10 with the reconstruction spliced in.
3. ``annotate_layer`` / ``annotate_dictionary``: every live SAE feature and every hidden dimension against the items'
   attributes on the held-out users' tokens, for the current and the next item.
4. ``steering_report`` (steering.py) / ``measure_steering``: how far steering along each labelled feature moves the
   top-10 toward its label, at a strength calibrated per feature, and what it costs in NDCG@10.

Folder stages rebuild the training sequences from the checkpoint (its vocabulary, options and training day), so
they see exactly the users and items the model was trained on. Defaults are sized for the demo (about 8k users,
2k skus) on a CPU; ``overrides`` change any field of the model's and the training's config by name.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from ubp_pipeline.core.common.device import TorchRuntime
from ubp_pipeline.core.common.progress import EpochCallback
from ubp_pipeline.core.recommender.annotation import (
    MIN_FIRES,
    Subject,
    annotate_hidden_dimensions,
    annotate_sae_features,
    compare_monosemanticity,
    reliable_features,
)
from ubp_pipeline.core.recommender.item_sequences import LeaveOneOutSplit, leave_one_out
from ubp_pipeline.core.recommender.ranking import (
    BLEND,
    ITEM_TO_ITEM,
    POPULARITY,
    SASREC,
    ItemToItem,
    blended_scorer,
    evaluate_full_ranking,
    fit_item_to_item,
    item_to_item_scorer,
    popularity_scorer,
    sasrec_scorer,
)
from ubp_pipeline.core.recommender.sae_training import (
    HiddenStates,
    SAETrainingConfig,
    TrainedSAE,
    collect_hidden_states,
    evaluate_sae,
    splice_fidelity,
    train_sae,
)
from ubp_pipeline.core.recommender.sasrec_training import SASRecTrainingConfig, TrainedSASRec, train_sasrec
from ubp_pipeline.core.recommender.sku_sequences import SkuSequenceOptions, build_sku_sequences
from ubp_pipeline.core.recommender.steering import STEERING_COLUMNS, steering_report
from ubp_pipeline.core.recommender.store import (
    Annotations,
    StoredRecommender,
    load_annotations,
    load_dictionary,
    load_recommender,
    save_annotations,
    save_dictionary,
    save_recommender,
    save_steering_report,
)
from ubp_pipeline.models.sae import SAEConfig, TopKSAE
from ubp_pipeline.models.sasrec import SASRec, SASRecConfig

# Product sequences are short (demo: median 6 skus, p99 26): 32 positions hold 99.9 % of them whole.
SASREC_DEFAULTS = {"max_len": 32, "d_model": 64, "n_heads": 2, "n_blocks": 2, "dropout": 0.2}
# Measured on the demo's training day (7.6k users, 1.8k skus, one CPU thread): the best validation epoch comes at
# 5-8; test NDCG@10 0.1255 with item dropout 0.2 (0.1246 without) vs popularity 0.0729 and item-to-item 0.1018.
# Label smoothing 0.1, which raised validation NDCG@10 on every seed of MovieLens-100k (bench/results/
# sasrec_smoothing.md), was level here (this recipe on the demo's 2022-09-22 sequences, seeds 0-2: test 0.1245 /
# 0.1242 / 0.1250 vs 0.1255 / 0.1234 / 0.1237), so it is left at 0; set it with the asset's overrides.
# Weight averaging (weight_average_decay 0.98), which MovieLens-100k's validation prefers (bench/results/
# sasrec_weight_average.md), was level on validation here (same sequences, seeds 0-5: up on 2 of 6, by -0.0006 to
# +0.0022), so it is left off: the recipe is chosen on validation (test moved 0.1244 -> 0.1262 in median).
# Item attributes (a sku's vector ends with 16 coordinates holding the mean of its category's and price band's
# embeddings) raised NDCG@10 on the same sequences, seeds 0-5: validation up on 6 of 6, test 0.1253 -> 0.1273 in
# median, mean gain +0.0024 [+0.0008, +0.0040], beyond noise; best epochs 5-8 vs 7-11 (bench/results/
# sasrec_demo_item_attributes.md; `bench_sasrec_recipes.py --sequences ... --baseline item_attributes=false
# --change item_attributes=true`). They also let one direction move all of a label's skus (steering).
# A third block, which MovieLens-100k's validation prefers (mean gain +0.0028, bench/results/sasrec_n_blocks.md),
# leaned far less here (same sequences, seeds 0-5: validation up on 4 of 6, mean +0.0009; mean test gain -0.0006
# [-0.0021, +0.0008]; bench/results/sasrec_demo_n_blocks.md): too little for 1.3x the training time (68 vs 53 s),
# so two blocks stay.
SASREC_TRAINING = SASRecTrainingConfig(
    epochs=30, batch_size=64, learning_rate=1e-3, patience=3, valid_users=2_000, item_dropout=0.2, item_attributes=True
)
SAE_DEFAULTS = {"expansion": 8, "k": 8}
SAE_TRAINING = SAETrainingConfig(epochs=20, batch_size=512, learning_rate=1e-3, dead_window_tokens=20_000)


class NotEnoughData(ValueError):
    """The training day has too few users with enough product events to train a recommender worth reading."""


def _with_overrides(overrides: dict[str, Any], *configs: Any) -> list[Any]:
    """Each dataclass with the override keys that name its fields replaced; a key that no config has is an error."""
    names = [{f.name for f in dataclasses.fields(config)} for config in configs]
    unknown = set(overrides) - set().union(*names)
    if unknown:
        raise ValueError(f"unknown hyper-parameters {sorted(unknown)}; known: {sorted(set().union(*names))}")
    return [dataclasses.replace(c, **{k: v for k, v in overrides.items() if k in n}) for c, n in zip(configs, names)]


def compare_with_baselines(
    model: SASRec, baselines: ItemToItem, split: LeaveOneOutSplit, device: torch.device
) -> pd.DataFrame:
    """One row per model (SASRec, popularity, item-to-item, their blend): HR@10 and NDCG@10 on validation and test,
    all on the same split and every user."""
    scorers = {
        SASREC: sasrec_scorer(model),
        POPULARITY: popularity_scorer(split.train),
        ITEM_TO_ITEM: item_to_item_scorer(baselines),
        BLEND: blended_scorer(model, baselines),
    }
    rows = []
    for name, scorer in scorers.items():
        row = {"model": name}
        for part in ("valid", "test"):
            metrics = evaluate_full_ranking(scorer, getattr(split, part), device=device)
            row |= {f"{part}_hr@10": metrics["hr@10"], f"{part}_ndcg@10": metrics["ndcg@10"]}
        rows.append(row)
    return pd.DataFrame(rows)


def best_model(quality: pd.DataFrame) -> str:
    """The model served: the best validation NDCG@10 (the test split stays for reporting), the first listed on a
    tie (SASRec before the others)."""
    return str(quality.sort_values("valid_ndcg@10", ascending=False, kind="stable")["model"].iloc[0])


@dataclass(frozen=True)
class TrainedRecommender:
    trained: TrainedSASRec
    baselines: ItemToItem
    quality: pd.DataFrame  # compare_with_baselines
    served_model: str

    @property
    def sasrec_wins(self) -> bool:
        """SASRec alone ranks validation users better than both baselines."""
        valid = self.quality.set_index("model")["valid_ndcg@10"]
        return bool(valid[SASREC] > max(valid[POPULARITY], valid[ITEM_TO_ITEM]))

    def metrics(self) -> dict[str, float | str | bool]:
        """Flat figures on test: ``test_*`` for SASRec, ``popularity_*``, ``item_to_item_*``, ``blend_*``; the model
        served and whether SASRec alone beats the baselines."""
        by_model = self.quality.set_index("model")
        flat = {f"test_{m}": float(by_model.loc[SASREC, f"test_{m}"]) for m in ("hr@10", "ndcg@10")}
        for name, prefix in ((POPULARITY, "popularity"), (ITEM_TO_ITEM, "item_to_item"), (BLEND, "blend")):
            flat |= {f"{prefix}_{m}": float(by_model.loc[name, f"test_{m}"]) for m in ("hr@10", "ndcg@10")}
        return flat | {"served_model": self.served_model, "sasrec_beats_baselines": self.sasrec_wins}


def train_recommender(
    split: LeaveOneOutSplit,
    model_config: SASRecConfig,
    training: SASRecTrainingConfig,
    runtime: TorchRuntime,
    callback: EpochCallback | None = None,
) -> TrainedRecommender:
    """SASRec and both baselines on one split, compared; the best on validation is the one to serve."""
    trained = train_sasrec(split, model_config, training, runtime, callback)
    baselines = fit_item_to_item(split.train)
    quality = compare_with_baselines(trained.model, baselines, split, runtime.device)
    return TrainedRecommender(trained, baselines, quality, best_model(quality))


@dataclass(frozen=True)
class RecommenderFit:
    metrics: dict[str, float | str | bool]
    quality: pd.DataFrame
    history: list[dict[str, float]]
    device: str


def fit_recommender(
    sequences_dir: str | Path,
    out_dir: str | Path,
    runtime: TorchRuntime,
    *,
    training_day: str,
    options: SkuSequenceOptions = SkuSequenceOptions(),
    overrides: dict[str, Any] | None = None,
    min_users: int = 200,
    callback: EpochCallback | None = None,
) -> RecommenderFit:
    """``train_recommender`` on the day's sku sequences, saved with the baselines and the name of the model to serve."""
    from_data = sorted({"n_items", "n_attribute_values", "attribute_slots"} & set(overrides or {}))
    if from_data:
        raise ValueError(f"{from_data} follow from the data (vocabulary, item attributes) and cannot be overridden")
    sequences = build_sku_sequences(sequences_dir, options)
    if sequences.n_users < min_users:
        raise NotEnoughData(
            f"{sequences.n_users} users have {options.min_length}+ product events on skus seen "
            f"{options.min_item_count}+ times in user_sequences {training_day}; a recommender needs {min_users}"
        )
    model_config, training = _with_overrides(
        overrides or {}, SASRecConfig(n_items=sequences.n_items, **SASREC_DEFAULTS), SASREC_TRAINING
    )
    result = train_recommender(leave_one_out(sequences), model_config, training, runtime, callback)
    trained = result.trained
    metrics = result.metrics() | {
        "users": sequences.n_users,
        "items": sequences.n_items,
        "interactions": len(sequences.items),
        "best_epoch": trained.best_epoch,
        "epochs": len(trained.history.epochs),
        "training_seconds": trained.seconds,
        "tokens_per_second": trained.tokens_per_second,
    }
    device = str(runtime.describe()["device_name"])
    config = {
        "training_day": training_day,
        "options": dataclasses.asdict(options),
        "training": dataclasses.asdict(training),
        "metrics": metrics,
        "quality": result.quality.to_dict(orient="records"),
        "served_model": result.served_model,
        "history": trained.history.epochs,
        "device": device,
    }
    save_recommender(out_dir, trained.model, result.baselines, sequences, config)
    return RecommenderFit(metrics=metrics, quality=result.quality, history=trained.history.epochs, device=device)


def _training_view(
    model_dir: str | Path, sequences_root: str | Path, runtime: TorchRuntime
) -> tuple[StoredRecommender, LeaveOneOutSplit]:
    """The stored model and the split of the sequences it was trained on (its training day, vocabulary, options)."""
    stored = load_recommender(model_dir, runtime.device)
    return stored, leave_one_out(stored.sequences(Path(sequences_root) / stored.training_day))


@dataclass(frozen=True)
class DictionaryFit:
    layer: int
    n_latents: int
    k: int
    holdout: dict[str, float]  # explained_variance, l0, dead_fraction, tokens, and the yardsticks of evaluate_sae
    fidelity: dict[str, float]  # NDCG@10 / HR@10 original, sae, mean_ablated; ndcg_recovered (NaN when undefined)
    training_dead_fraction: float
    dead_window_tokens: int
    training_tokens: int
    training_seconds: float
    history: list[dict[str, float]]


@dataclass(frozen=True)
class TrainedDictionary:
    sae: TopKSAE
    states: HiddenStates  # every training token's hidden state at the layer
    holdout: HiddenStates  # the held-out users' share of them: what the SAE is measured and annotated on
    fit: DictionaryFit


def train_dictionary(
    model: SASRec,
    split: LeaveOneOutSplit,
    layer: int,
    sae_config: SAEConfig,
    training: SAETrainingConfig,
    runtime: TorchRuntime,
    *,
    holdout_users: float = 0.1,
    callback: EpochCallback | None = None,
) -> TrainedDictionary:
    """A TopK SAE on the residual stream after ``layer`` blocks, trained on all but ``holdout_users`` of the users;
    quality is measured on the held-out users, fidelity on every user's test item."""
    states = collect_hidden_states(model, split.train, layer, runtime.device)
    train_states, holdout = states.split_users(holdout_users, runtime.seed)
    trained: TrainedSAE = train_sae(train_states.states, sae_config, training, runtime, callback)
    fit = DictionaryFit(
        layer=layer,
        n_latents=sae_config.n_latents,
        k=sae_config.k,
        holdout=evaluate_sae(trained.sae, holdout.states, training_states=train_states.states),
        fidelity=splice_fidelity(model, trained.sae, states, split.test, runtime.device),
        training_dead_fraction=trained.history.last()["dead"],
        dead_window_tokens=training.dead_window_tokens,
        training_tokens=len(train_states),
        training_seconds=trained.seconds,
        history=trained.history.epochs,
    )
    return TrainedDictionary(trained.sae, states, holdout, fit)


def fit_dictionary(
    model_dir: str | Path,
    sequences_root: str | Path,
    out_dir: str | Path,
    runtime: TorchRuntime,
    *,
    layer: int = -1,
    holdout_users: float = 0.1,
    overrides: dict[str, Any] | None = None,
    callback: EpochCallback | None = None,
) -> DictionaryFit:
    """``train_dictionary`` on the stored model's training sequences (negative ``layer`` counts from the end: -1 =
    after the last block), saved with the held-out share so the annotations read the same held-out users."""
    stored, split = _training_view(model_dir, sequences_root, runtime)
    layer = range(stored.model.config.n_blocks + 1)[layer]
    sae_config, training = _with_overrides(
        overrides or {}, SAEConfig(d_in=stored.model.config.d_model, **SAE_DEFAULTS), SAE_TRAINING
    )
    result = train_dictionary(
        stored.model, split, layer, sae_config, training, runtime, holdout_users=holdout_users, callback=callback
    )
    config = {
        "training": dataclasses.asdict(training),
        "fit": dataclasses.asdict(result.fit),
        "holdout_users": holdout_users,
        "seed": runtime.seed,
    }
    save_dictionary(out_dir, result.sae, layer, config)
    return result.fit


def annotate_layer(
    sae: TopKSAE,
    holdout: HiddenStates,
    split: LeaveOneOutSplit,
    *,
    subject: Subject = "next",
    max_tokens: int = 50_000,
    min_value_tokens: int = 20,
    min_item_tokens: int = 5,
    min_fires: int = MIN_FIRES,
    seed: int = 0,
) -> Annotations:
    """Every live SAE feature and every hidden dimension on held-out tokens (labels for ``subject``), and the two
    families compared for both the current and the next item."""
    options = {
        "max_tokens": max_tokens,
        "min_value_tokens": min_value_tokens,
        "min_item_tokens": min_item_tokens,
        "seed": seed,
    }
    tables = {
        side: (
            annotate_sae_features(sae, holdout, split.train, subject=side, **options),
            annotate_hidden_dimensions(holdout, split.train, subject=side, **options),
        )
        for side in dict.fromkeys([subject, "current", "next"])
    }
    by_subject = pd.concat(
        [
            compare_monosemanticity({"sae": sae_table, "hidden": hidden_table}, min_fires=min_fires).assign(
                subject=side
            )
            for side, (sae_table, hidden_table) in tables.items()
        ]
    )
    settings = {"subject": subject, "min_fires": min_fires, "tokens": min(len(holdout), max_tokens), "held_out": True}
    comparison = by_subject[by_subject["subject"] == subject]
    return Annotations(*tables[subject], comparison, by_subject, settings)


def annotate_dictionary(
    model_dir: str | Path,
    dictionary_dir: str | Path,
    sequences_root: str | Path,
    out_dir: str | Path,
    runtime: TorchRuntime,
    **options: Any,
) -> Annotations:
    """``annotate_layer`` on the users the stored dictionary held out of its training, saved."""
    stored, split = _training_view(model_dir, sequences_root, runtime)
    dictionary = load_dictionary(dictionary_dir, runtime.device)
    states = collect_hidden_states(stored.model, split.train, dictionary.layer, runtime.device)
    seed = dictionary.config.get("seed", runtime.seed)
    _, holdout = states.split_users(dictionary.config.get("holdout_users", 0.1), seed)
    annotations = annotate_layer(dictionary.sae, holdout, split, seed=runtime.seed, **options)
    save_annotations(out_dir, annotations)
    return annotations


def sample_users(n_users: int, max_users: int, seed: int) -> np.ndarray:
    """All users, or ``max_users`` of them drawn at random (sorted), so a report stays cheap on big data."""
    users = np.arange(n_users)
    if n_users > max_users:
        users = np.sort(np.random.default_rng(seed).choice(users, max_users, replace=False))
    return users


def measure_steering(
    model_dir: str | Path,
    dictionary_dir: str | Path,
    annotations_dir: str | Path,
    sequences_root: str | Path,
    out_dir: str | Path,
    runtime: TorchRuntime,
    *,
    max_users: int = 2_000,
    **options: Any,
) -> pd.DataFrame:
    """``steering.steering_report`` on the leave-one-out test of at most ``max_users`` sampled users, saved. Empty
    when no feature fired often enough to be trusted."""
    stored, split = _training_view(model_dir, sequences_root, runtime)
    dictionary = load_dictionary(dictionary_dir, runtime.device)
    annotations = load_annotations(annotations_dir)
    if reliable_features(annotations.sae_features, annotations.min_fires).empty:
        report = pd.DataFrame(columns=STEERING_COLUMNS)
    else:
        report = steering_report(
            stored.model,
            dictionary.sae,
            dictionary.layer,
            annotations.sae_features,
            split.test,
            min_fires=annotations.min_fires,
            users=sample_users(split.test.n_users, max_users, runtime.seed),
            device=runtime.device,
            **options,
        )
    save_steering_report(out_dir, report)
    return report
