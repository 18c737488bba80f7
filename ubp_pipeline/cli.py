"""`ubp`: generate demo data, run the main job on the demo or a real source, open the UI, recommend with steering."""

import argparse
import fcntl
import os
import shutil
import socket
import sys
import time
from datetime import date, datetime
from pathlib import Path

from ubp_pipeline.settings import DEMO_DAYS, DEMO_FIRST_DAY, DEMO_SOURCE, Settings, is_demo_source

DEMO_USERS = 20_000
UI_HOST = "127.0.0.1"
INIT_LOCK = ".ubp-init.lock"


class UsageError(Exception):
    """Something the user can fix; shown as one line (the message says how), without a traceback."""


def _generate(args: argparse.Namespace) -> None:
    from ubp_pipeline.data.synthetic import SyntheticConfig, generate

    summary = generate(
        SyntheticConfig(users=args.users, days=args.days, seed=args.seed, start=args.start, activity=args.activity),
        args.out,
    )
    print(f"wrote {sum(summary.events.values()):,} events of {summary.users:,} users to {summary.out}")
    for event_type, n in summary.events.items():
        print(f"  {event_type:<18} {n:>12,}")
    print(f"  days {summary.first_day} .. {summary.last_day}; planted truth in {Path(summary.out) / 'truth'}")


def _use_source(source: Path) -> None:
    """Point the settings at a real source and its own day range (partitions are built from them at load).

    UBP_FIRST_DAY and UBP_LAST_DAY, when both are set, win over the detected range."""
    from ubp_pipeline.core.warehouse.source_layout import SourceLayout
    from ubp_pipeline.core.warehouse.source_scan import detect_day_range

    if not source.is_dir():
        raise UsageError(f"no such folder: {source} (give --source the folder that holds product_buy.parquet etc.)")
    os.environ["UBP_SOURCE_DIR"] = str(source.resolve())
    if "UBP_FIRST_DAY" in os.environ and "UBP_LAST_DAY" in os.environ:
        print(f"source {source}: days {os.environ['UBP_FIRST_DAY']} to {os.environ['UBP_LAST_DAY']} (UBP_FIRST_DAY/UBP_LAST_DAY)")
        return
    detected = detect_day_range(SourceLayout(source))
    os.environ.setdefault("UBP_FIRST_DAY", detected.first_day.isoformat())
    os.environ.setdefault("UBP_LAST_DAY", detected.last_day.isoformat())
    print(f"source {source}: events from {detected.first_day} to {detected.last_day}")
    if detected.outside_rows:
        print(
            f"  {detected.outside_rows:,} rows dated far from the rest are left outside these days and will be "
            f"quarantined as outside_day_range ({'; '.join(detected.outside_examples)}); "
            "to ingest them set UBP_FIRST_DAY and UBP_LAST_DAY"
        )


def _choose_dagster_home() -> Path:
    """DAGSTER_HOME when it is set (a deployment's, a test's); otherwise dagster_home/ in the working directory (the
    project's, the demo's) for the demo, and for a real source an instance of its own beside its data
    (<UBP_HOME>/dagster_home, started with the project's dagster.yaml), so that the UI and the newest-partition
    defaults never mix its runs with the demo's on the same calendar days."""
    if os.environ.get("DAGSTER_HOME"):
        return Path(os.environ["DAGSTER_HOME"])
    project_home = Path("dagster_home").resolve()
    settings = Settings.from_env()
    home = project_home if settings.is_demo else settings.home / "dagster_home"
    if home != project_home:
        home.mkdir(parents=True, exist_ok=True)
        if (project_home / "dagster.yaml").exists() and not (home / "dagster.yaml").exists():
            shutil.copyfile(project_home / "dagster.yaml", home / "dagster.yaml")
    os.environ["DAGSTER_HOME"] = str(home)
    return home


def _ensure_dagster_home() -> None:
    """Create the Dagster home and its instance storage once, under a lock: `ubp` commands started together on a
    fresh home would otherwise race to create the same SQLite tables (and, on PostgreSQL, the warehouse pool's
    limit). Runs that a killed `ubp` left behind are failed here, before anything new starts."""
    import dagster as dg

    from ubp_pipeline.runner import ensure_pools

    home = _choose_dagster_home()
    home.mkdir(parents=True, exist_ok=True)
    with open(home / INIT_LOCK, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        with dg.DagsterInstance.get() as instance:
            ensure_pools(instance)
            _fail_orphaned_runs(instance)


def _fail_orphaned_runs(instance) -> None:
    """A `ubp` process killed mid-run (SIGKILL, out of memory) cannot record its run's end, which would then show as
    STARTED forever: fail the unfinished runs whose recorded process on this host no longer runs, saying why."""
    import dagster as dg

    from ubp_pipeline.runner import HOST_TAG, PID_TAG

    host = socket.gethostname()
    unfinished = dg.RunsFilter(
        statuses=[dg.DagsterRunStatus.STARTING, dg.DagsterRunStatus.STARTED], tags={HOST_TAG: host}
    )
    for record in instance.get_run_records(unfinished):
        run = record.dagster_run
        pid = int(run.tags[PID_TAG])
        if _still_running(pid, since=record.create_timestamp):
            continue
        message = (
            f"run {run.run_id} was left {run.status.value} by process {pid} on {host}, which no longer runs "
            "(killed?): marked as failed"
        )
        instance.report_run_failed(run, message)
        print(f"ubp: {message}", flush=True)


def _still_running(pid: int, since: datetime) -> bool:
    """Whether process ``pid`` is alive and was already running at ``since`` (a newer process may reuse the number)."""
    import psutil

    try:
        process = psutil.Process(pid)
        return process.status() != psutil.STATUS_ZOMBIE and process.create_time() <= since.timestamp() + 1
    except psutil.NoSuchProcess:
        return False
    except psutil.AccessDenied:  # another user's process: alive, and not ours to judge
        return True


def _run_main_job() -> None:
    import dagster as dg

    from ubp_pipeline.definitions import build_definitions
    from ubp_pipeline.pipeline import run_pipeline
    from ubp_pipeline.summary import print_summary

    _ensure_dagster_home()
    settings = Settings.from_env()
    started = time.perf_counter()
    with dg.DagsterInstance.get() as instance:
        runs = run_pipeline(build_definitions(settings), settings, instance)
    print_summary(settings, runs, time.perf_counter() - started)


def _demo(args: argparse.Namespace) -> None:
    if not is_demo_source(os.environ.get("UBP_SOURCE_DIR", DEMO_SOURCE)):
        sys.exit("ubp demo runs on the built-in demo data: unset UBP_SOURCE_DIR (use `ubp run --source DIR` for yours)")
    settings = Settings.from_env()
    if args.regenerate or not (settings.source_dir / "product_buy.parquet").exists():
        from ubp_pipeline.data.synthetic import SyntheticConfig, generate

        print(f"generating the demo data set ({args.users:,} users, {DEMO_DAYS} days) in {settings.source_dir}")
        generate(SyntheticConfig(users=args.users, days=DEMO_DAYS, start=DEMO_FIRST_DAY, seed=0), settings.source_dir)
    _run_main_job()


def _run(args: argparse.Namespace) -> None:
    _use_source(Path(args.source))
    _run_main_job()


def _ui(args: argparse.Namespace) -> None:
    if args.source:
        _use_source(Path(args.source))
    _ensure_dagster_home()
    dagster = Path(sys.executable).parent / "dagster"  # the venv's own, found without an activated venv or PATH
    if not dagster.exists():
        raise UsageError(f"{dagster} does not exist: install the project into this environment (make setup)")
    command = [str(dagster), "dev", "-h", UI_HOST, "-p", str(args.port), "-m", "ubp_pipeline.definitions"]
    # flushed: execv replaces this process before a block-buffered stdout (a file, a pipe) would be written
    print(f"Dagster UI on http://{UI_HOST}:{args.port} (DAGSTER_HOME={os.environ['DAGSTER_HOME']})", flush=True)
    os.execv(command[0], command)


def _export(args: argparse.Namespace) -> None:
    """Copy a profile day into a folder in the challenge's submission layout and validate it."""
    from ubp_pipeline.assets.profiles import UNIVERSAL_PROFILES
    from ubp_pipeline.core.common.atomic import atomic_path
    from ubp_pipeline.core.profiles.assembly import CLIENT_IDS_FILE, EMBEDDINGS_FILE, validate_profiles
    from ubp_pipeline.core.warehouse.source_layout import SourceLayout, load_relevant_clients

    if args.source:
        _use_source(Path(args.source))
    settings = Settings.from_env()
    day = args.day or settings.last_day.isoformat()
    folder = settings.artifact_dir / UNIVERSAL_PROFILES / day
    if not (folder / EMBEDDINGS_FILE).exists():
        sys.exit(f"no profiles for {day} in {folder}: materialize universal_profiles for that day first")
    out = Path(args.out or settings.home / "export" / day)
    out.mkdir(parents=True, exist_ok=True)
    for name in (CLIENT_IDS_FILE, EMBEDDINGS_FILE):
        with atomic_path(out / name) as tmp:
            shutil.copyfile(folder / name, tmp)
    relevant = load_relevant_clients(SourceLayout(settings.source_dir), fallback=[])
    problems = validate_profiles(out, relevant if len(relevant) else None)
    if problems:
        sys.exit("the exported files are not a valid submission:\n  " + "\n  ".join(problems))
    print(f"wrote {out / CLIENT_IDS_FILE} and {out / EMBEDDINGS_FILE} (valid: int64 ids, float16 embeddings)")
    print(f"score them with the official evaluator: see README, 'Scoring with the challenge's evaluator' (--embeddings-dir {out})")


def _recommend(args: argparse.Namespace) -> None:
    """Top-k skus for one client from the served model (SASRec, a baseline that beat it, or their blend), before and
    after steering through SAE features, optionally with the features behind each recommendation."""
    from ubp_pipeline.assets.interpretability import SAE_DICTIONARY, SAE_FEATURE_ANNOTATIONS, STEERING_REPORT
    from ubp_pipeline.assets.recommender import SASREC_MODEL
    from ubp_pipeline.assets.sequences import USER_SEQUENCES
    from ubp_pipeline.core.recommender.serving import SteeringRequest, newest_partition, recommend_for_client

    if args.source:
        _use_source(Path(args.source))
    artifacts = Settings.from_env().artifact_dir
    try:
        result = recommend_for_client(
            artifacts / SASREC_MODEL,
            artifacts / SAE_DICTIONARY,
            artifacts / SAE_FEATURE_ANNOTATIONS,
            newest_partition(artifacts / USER_SEQUENCES),
            args.client,
            [SteeringRequest.parse(text) for text in args.steer],
            k=args.k,
            clamp=args.clamp,
            explain=args.explain,
            steering_dir=artifacts / STEERING_REPORT,
        )
    except FileNotFoundError as error:
        sys.exit(f"{error}\nmaterialize the recommender first: `ubp demo` and `ubp run` do (assets group:recommender)")
    except (KeyError, ValueError) as error:
        sys.exit(str(error.args[0]))
    history = result.history["name"]
    print(f"client {result.client_id}: {len(history)} skus the model knows in user_sequences {result.partition}")
    print("  newest: " + "; ".join(history.tail(3)))
    served = "served: it ranks validation users best" if result.model == result.served_model else (
        f"the SAE reads it; the served model is {result.served_model}, which ranks validation users better"
    )
    print(f"model: {result.model} ({served})")
    for resolved in result.steerings:
        steering = resolved.steering
        print(
            f"steering toward {resolved.target} by feature {steering.feature} (annotated {resolved.label}, "
            f"monosemanticity {resolved.monosemanticity:.2f}): {steering.mode} {steering.strength:.3g} = "
            f"{resolved.multiple:g}x its largest activation"
        )
    before = result.before["name"].tolist()
    width = max(map(len, before)) + 3
    after = before if result.after is None else result.after["name"].tolist()
    print(f"{'rank':>4}  {'recommended':<{width}}{'' if result.after is None else 'after steering (* = new)'}".rstrip())
    for rank, (plain, steered) in enumerate(zip(before, after), start=1):
        mark = "* " if steered not in before else "  "
        print(f"{rank:>4}  {plain:<{width}}{'' if result.after is None else mark + steered}".rstrip())
    for resolved in result.steerings:
        attribute, _, value = resolved.target.partition(":")
        counts = [int((frame[attribute] == value).sum()) for frame in (result.before, result.after)]
        print(f"{resolved.target} in the top {args.k}: {counts[0]} before, {counts[1]} after steering")
    if result.explanation is not None:
        steered = "" if result.after is None else " (after steering)"
        print(f"why{steered}: SAE features at the last position, score drop when each is removed")
        for (rank, name), reasons in result.explanation.groupby(["rank", "name"], sort=True):
            because = ", ".join(
                f"{row.label} (feature {row.feature}, -{row.score_drop:.2f})" for row in reasons.itertuples()
            )
            print(f"{rank:>4}  {name}: {because}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ubp", description=__doc__)
    parser.add_argument("--debug", action="store_true", help="show the full traceback of an error")
    debug = argparse.ArgumentParser(add_help=False)  # so `--debug` also works after the command
    debug.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    subparsers = parser.add_subparsers(dest="command", required=True)

    def command(name: str, **kwargs) -> argparse.ArgumentParser:
        return subparsers.add_parser(name, parents=[debug], **kwargs)

    generate = command("generate", help="write a synthetic data set in the challenge layout")
    generate.add_argument("--users", type=int, default=DEMO_USERS)
    generate.add_argument("--days", type=int, default=DEMO_DAYS)
    generate.add_argument("--seed", type=int, default=0)
    generate.add_argument("--start", type=date.fromisoformat, default=DEMO_FIRST_DAY, help="first day (YYYY-MM-DD)")
    generate.add_argument(
        "--activity", type=float, default=1.0, help="session-rate multiplier (1.0: ~55 events a user over 120 days)"
    )
    generate.add_argument("--out", required=True, help="output directory (replaced as a whole)")
    generate.set_defaults(handler=_generate)

    demo = command("demo", help="generate the demo data if missing and run the main job on it")
    demo.add_argument("--users", type=int, default=DEMO_USERS)
    demo.add_argument("--regenerate", action="store_true", help="write the demo data again even if present")
    demo.set_defaults(handler=_demo)

    run = command("run", help="run the main job on a directory in the challenge layout")
    run.add_argument("--source", required=True, help="directory with product_buy.parquet etc. (or folders of them)")
    run.set_defaults(handler=_run)

    export = command("export", help="write a profile day as client_ids.npy + embeddings.npy for the challenge")
    export.add_argument("--day", help="as-of day (YYYY-MM-DD); default: the last day of the data")
    export.add_argument("--out", help="output folder; default: <home>/export/<day>")
    export.add_argument("--source", help="the source directory the profiles were built from (default: the demo)")
    export.set_defaults(handler=_export)

    recommend = command("recommend", help="top-k skus for one client, before and after steering")
    recommend.add_argument("--client", type=int, required=True, help="client id (history: newest user_sequences day)")
    recommend.add_argument(
        "--steer",
        action="append",
        default=[],
        metavar="FEATURE=STRENGTH",
        help="SAE feature index or label (category:12, price:90-99) = strength in multiples of its largest activation;"
        " repeatable",
    )
    recommend.add_argument("--k", type=int, default=10, help="how many skus to list")
    recommend.add_argument("--clamp", action="store_true", help="set the features' activations instead of adding")
    recommend.add_argument("--explain", action="store_true", help="list the SAE features behind each recommendation")
    recommend.add_argument("--source", help="the source directory the recommender was built from (default: the demo)")
    recommend.set_defaults(handler=_recommend)

    ui = command("ui", help="start the Dagster UI on 127.0.0.1")
    ui.add_argument("--source", help="a real source directory (default: the demo data)")
    ui.add_argument("--port", type=int, default=3000)
    ui.set_defaults(handler=_ui)
    return parser


def _user_message(error: BaseException) -> str:
    """The one line a user needs: a failed Dagster step's own message rather than the wrappers around it."""
    import dagster as dg

    while isinstance(error, dg.DagsterUserCodeExecutionError) and error.user_exception is not None:
        error = error.user_exception
    text = error.description if isinstance(error, dg.Failure) and error.description else str(error)
    return " ".join(text.split()) or type(error).__name__


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    try:
        args.handler(args)
    except Exception as error:
        if args.debug:
            raise
        sys.exit(f"ubp: error: {_user_message(error)} (--debug shows the traceback)")


if __name__ == "__main__":
    main()
