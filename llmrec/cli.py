"""`llmrec` command line: one subcommand per pipeline stage, plus `retrain` and `demo`.

Why one module this long: one function per command of one Typer app, so `llmrec --help` and every command read
in one place; each body is a call into the pipeline.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import sys
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from llmrec.config import Params, load_params
from llmrec.errors import LlmrecError

app = typer.Typer(
    help=(
        "llmrec fine-tunes a pretrained language model into a news/item ranker and runs it as a\n"
        "workflow: ingest -> validate (Great Expectations) -> version (DVC) -> train -> evaluate ->\n"
        "register (MLflow) -> drift (Evidently) -> promote.\n\n"
        "Every option has a default in params.yaml; override any of them with --set section.key=value."
    ),
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


class State:
    params_file: str = "params.yaml"
    overrides: list[str] = []

    @classmethod
    def params(cls) -> Params:
        from llmrec import tracking

        params = _run(load_params, cls.params_file, cls.overrides)
        tracking.configure(params.tracking.timeout_seconds, params.tracking.retries)  # for the commands that talk to MLflow
        return params


@app.callback()
def main(
    ctx: typer.Context,
    params_file: Annotated[str, typer.Option("--params", "-p", help="Parameter file (YAML).")] = "params.yaml",
    overrides: Annotated[
        Optional[list[str]], typer.Option("--set", "-s", help="Override a parameter, e.g. --set train.max_steps=50 (repeatable).")
    ] = None,
    budget: Annotated[
        Optional[str], typer.Option("--budget", "-b", help="Apply a named set of settings from params.yaml `budgets` (e.g. cpu-3min, cpu-10min, gpu-1h); --set still wins.")
    ] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log debug details.")] = False,
) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S"
    )
    for noisy in ("httpx", "httpcore", "alembic", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    from llmrec.training.distributed import env_world_size, is_main_process

    if env_world_size() > 1 and ctx.invoked_subcommand != "train":
        typer.secho(
            f"error: `llmrec {ctx.invoked_subcommand}` does not run distributed (WORLD_SIZE={env_world_size()}); "
            "only `llmrec train` does: torchrun --nproc_per_node N -m llmrec.cli train",
            fg=typer.colors.RED, err=True,
        )
        raise typer.Exit(2)
    if not is_main_process():
        logging.getLogger().setLevel(logging.WARNING)  # one process reports; the others only warn
    State.params_file = params_file
    State.overrides = ([f"budget={budget}"] if budget else []) + list(overrides or [])
    if not sys.stderr.isatty():  # logs and CI: a progress line every 15 s, not one per update (tqdm reads TQDM_*)
        os.environ.setdefault("TQDM_MININTERVAL", "15")


def _run(fn, *args: Any, **kwargs: Any) -> Any:
    """Run a stage; llmrec errors become a clear message and exit code 1, not a traceback."""
    try:
        return fn(*args, **kwargs)
    except LlmrecError as exc:
        typer.secho(f"error: {type(exc).__name__}: {exc}", fg=typer.colors.RED, err=True)
        raise typer.Exit(1) from None


def _echo_json(data: dict) -> None:
    typer.echo(json.dumps(data, indent=2, default=str))


@app.command()
def generate(
    preset: Annotated[Optional[str], typer.Option(help="Size preset from params.yaml (tiny | small).")] = None,
    seed: Annotated[Optional[int], typer.Option(help="Random seed (same seed -> byte-identical files).")] = None,
    out: Annotated[Optional[Path], typer.Option(help="Output folder (default synthetic.out).")] = None,
    period: Annotated[Optional[list[int]], typer.Option("--period", help="Period(s) to write (repeatable; default 1 and 2).")] = None,
    format: Annotated[
        str, typer.Option("--format", help="mind: news impressions per period folder; movielens: one ml-latest folder "
                          "(ratings.csv + movies.csv) of a catalogue that never goes stale, a positive-only log.")
    ] = "mind",
) -> None:
    """Write the bundled synthetic dataset: MIND format (news.tsv + behaviors.tsv per period) or MovieLens (ml-latest)."""
    from llmrec.data.synthetic import generate as gen

    params = State.params()
    syn = params.synthetic
    if preset:
        syn = syn.model_copy(update={"preset": preset})
    folders = _run(gen, out or syn.out, _run(syn.size), seed if seed is not None else syn.seed, tuple(period or (1, 2)),
                   collaborative=syn.collaborative, format=format,
                   sequential=syn.sequential if format == "movielens" else 0.0)  # the bundled news data (data.dvc) has none
    for folder in folders:
        names = "ratings.csv and movies.csv" if format == "movielens" else "news.tsv and behaviors.tsv"
        typer.echo(f"wrote {folder}/{names.replace(' and ', f' and {folder}/')}")


@app.command("ingest")
def ingest_cmd(
    path: Annotated[
        Optional[Path],
        typer.Argument(help="Dataset folder (MIND, MovieLens ml-100k/1m/latest/25m, or CSV/Parquet tables per data.tables), or a folder of batch folders (default data.path)."),
    ] = None,
    out: Annotated[Optional[Path], typer.Option(help="Where to write the canonical tables (default data.prepared).")] = None,
) -> None:
    """Read a dataset folder (format detected from its files) into canonical Parquet tables."""
    from llmrec import pipeline

    params = State.params()
    update = {}
    if path:
        update["path"] = str(path)
    if out:
        update["prepared"] = str(out)
    params.data = params.data.model_copy(update=update)
    info = _run(pipeline.run_ingest, params)
    typer.echo(
        f"found {info['format']} data ({', '.join(info['batches'])}): {info['items']:,} items, "
        f"{info['impressions']:,} impressions, {info['interactions']:,} interactions, {info['start']} .. {info['end']}"
    )
    bad = info["bad_rows"]
    if bad["rows"]:
        typer.secho(
            f"left out {bad['rows']:,} bad row(s) of {bad['read']:,} ({bad['share']:.3%}; data.max_bad_row_share "
            f"{bad['max_share']:.3%}): {Path(params.data.prepared) / 'quarantine.csv'} lists each with its line and reason",
            fg=typer.colors.YELLOW,
        )


@app.command()
def validate() -> None:
    """Check the canonical tables with Great Expectations; exit 1 (with a table of failures) on errors."""
    from llmrec import pipeline

    result = _run(pipeline.run_validate, State.params())
    typer.secho(result["summary"], fg=typer.colors.YELLOW if result["n_warnings"] else None)
    typer.echo(f"Data Docs: {result.get('docs_path')}")


@app.command()
def version() -> None:
    """Snapshot data/ with DVC (`dvc add` + push) and print its hash and the git revision."""
    from llmrec import pipeline

    info = _run(pipeline.run_version, State.params())
    typer.echo(f"data version {info['dvc_md5']} ({info['nfiles']} files), git {info['git_revision'][:10]}{' (dirty)' if info['git_dirty'] else ''}")


@app.command()
def train(
    model: Annotated[
        Optional[str], typer.Option("--model", help="cross-encoder | two-tower | hybrid (default model.type in params.yaml).")
    ] = None,
) -> None:
    """Fine-tune the ranker (model.*, train.*) on the training part of the split."""
    from llmrec import pipeline

    if model:
        State.overrides = [*State.overrides, f"model.type={model}"]
    params = State.params()
    from llmrec.training.distributed import is_main_process

    info = _run(pipeline.run_train, params)
    unit = {"cross-encoder": "pairs/s", "two-tower": "clicks/s", "hybrid": "positions/s"}[params.model.type]
    processes = f" x {info['world_size']} processes" if info.get("world_size", 1) > 1 else ""
    if is_main_process():
        typer.echo(
            f"trained a {params.model.type} for {info['steps']} steps on {info['device']}{processes} in {info['seconds']:.0f}s "
            f"({info['pairs_per_second']:.1f} {unit}, {info['effective_batch']} examples per step, {info['precision']}), "
            f"final loss {info['final_loss']:.3f} -> {info['model_dir']}"
        )
        if info.get("under_trained"):
            typer.secho(f"warning: the model is {info['note']}; the promotion policy will not promote it unless it wins "
                        "anyway (give it a longer train.max_minutes or a less loaded machine)", fg=typer.colors.YELLOW, err=True)
        elif info.get("note"):
            typer.echo(f"training {info['note']}")


@app.command()
def evaluate(
    champion: Annotated[bool, typer.Option(help="Also score the current champion from the registry.")] = True,
) -> None:
    """Score the holdout with the model, the baselines (eval.baselines) and the champion; write report.md/html + plots."""
    from llmrec import pipeline

    info = _run(pipeline.run_evaluate, State.params(), with_champion=champion)
    typer.echo(info["markdown"])


@app.command()
def benchmark(
    data: Annotated[Path, typer.Argument(help="Dataset folder: MovieLens (ml-100k, ml-1m, ml-latest), your tables, or any log llmrec reads (its consumptions are used).")],
    model: Annotated[
        Optional[list[str]],
        typer.Option("--model", "-m", help="Model to run (repeatable or comma-separated): hybrid and the baselines random, popularity, "
                     "tfidf, zero_shot, itemknn, ease, sasrec. Default: popularity, itemknn, ease, sasrec, hybrid."),
    ] = None,
    out: Annotated[Optional[Path], typer.Option(help="Output folder (default outputs/benchmark/<data folder name>); a run there resumes.")] = None,
    negatives: Annotated[int, typer.Option(help="Sampled negatives per test item (drawn from items the user never consumed).")] = 99,
    min_events: Annotated[int, typer.Option(help="Users with fewer consumptions are left out.")] = 5,
    seed: Annotated[Optional[int], typer.Option(help="Seed of the negatives and the models (default eval.seed).")] = None,
) -> None:
    """Score models under the community's standard protocol, to compare with published numbers.

    Leave-last-out (validation = each user's second-to-last consumption, test = the last), users with at least
    --min-events consumptions, 99 negatives drawn uniformly from the items a user never consumed, full ranking minus
    every earlier consumption; train-only and train+validation histories, both reported. Baselines are tuned on the
    validation items (EASE l2, ItemKNN neighbours; SASRec and the hybrid stop early on them). Writes leaderboard.md,
    leaderboard.json and leaderboard.png; models already done in --out are read back, not re-run. The hybrid trains
    with params.yaml (use --budget, e.g. `llmrec --budget cpu-10min benchmark DATA`). `llmrec evaluate` is the
    production check (temporal holdout, the champion side by side); this is for papers.
    """
    from llmrec.data.ingest import load_source
    from llmrec.evaluation.benchmark import DEFAULT_MODELS, StandardProtocol, run_benchmark, to_markdown

    params = State.params()
    names = [n.strip() for item in (model or list(DEFAULT_MODELS)) for n in item.split(",") if n.strip()]
    protocol = StandardProtocol(min_events=min_events, negatives=negatives, seed=params.eval.seed if seed is None else seed,
                                confidence=params.eval.confidence)
    folder = out or Path("outputs/benchmark") / data.resolve().name
    dataset = _run(load_source, data, params.data).dataset
    board = _run(run_benchmark, dataset, names, folder, params, protocol, source=str(data))
    typer.echo(to_markdown(board))
    typer.echo(f"leaderboard: {folder}/leaderboard.md, {folder}/leaderboard.json, {folder}/leaderboard.png")


@app.command()
def register() -> None:
    """Register the trained model in MLflow (alias `challenger`) with metrics and data lineage."""
    from llmrec import pipeline

    info = _run(pipeline.run_register, State.params())
    typer.echo(f"registered {info['name']} version {info['version']} (run {info['run_id']})")


@app.command()
def drift() -> None:
    """Evidently drift report: data newer than the champion's vs the data it was trained on."""
    from llmrec import monitoring

    info = _run(monitoring.run_drift, State.params())
    typer.echo(info.get("summary") or info.get("skipped"))


@app.command()
def promote() -> None:
    """Apply the promotion policy to the latest registered challenger; print the decision (exit 1 on an ALERT)."""
    from llmrec import pipeline

    info = _run(pipeline.run_promote, State.params())
    typer.echo(info["summary"])
    if info["alert"]:
        raise typer.Exit(1)


@app.command()
def retrain() -> None:
    """Run the whole `retrain` Prefect flow (no server needed: Prefect's ephemeral mode); exit 1 on an ALERT."""
    summary, alert = _retrain_once()
    typer.echo(format_summary(summary))
    if alert:
        _exit_alert(alert)


@app.command()
def monitor(
    batch: Annotated[Path, typer.Option("--batch", "-b", help="Folder of the new batch (any supported format).")],
    retrain: Annotated[bool, typer.Option("--retrain", help="When the decision is 'retrain needed', add the batch to data.path and run `retrain`.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the whole record as JSON.")] = False,
) -> None:
    """A new batch arrived: validate it, compare it with the champion's data (Evidently), decide.

    Prints the drift verdict and the decision: "no action" or "retrain needed". An invalid batch
    stops with the validation report and exit 1; nothing is added or promoted.
    """
    from llmrec import monitoring

    params = State.params()
    info = _run(monitoring.run_monitor, params, batch)
    if as_json:
        _echo_json(info)
    else:
        v = info["validation"]
        typer.echo(f"batch {batch}: {info['ingest']['impressions']:,} impressions, validation passed ({v['n_warnings']} warnings)")
        if info["drift"]:
            typer.echo("drift: " + info["drift"]["summary"])
        typer.echo(info["decision"]["summary"])
    if not (retrain and info["retrain_needed"]):
        return
    added = _run(monitoring.add_batch, params, batch)
    typer.secho(f"\n=== retraining with {added} ===", bold=True)
    summary, alert = _retrain_once()
    typer.echo(format_summary(summary))
    if alert:
        _exit_alert(alert)


@app.command()
def recommend(
    all_users: Annotated[bool, typer.Option("--all-users", help="Every user of the prepared tables (data.prepared).")] = False,
    users: Annotated[
        Optional[Path], typer.Option("--users", help="A text file of user ids, one per line (instead of --all-users).")
    ] = None,
    k: Annotated[Optional[int], typer.Option("--k", min=1, help="Items per user (default batch.k).")] = None,
    out: Annotated[Optional[Path], typer.Option("--out", help="Parquet file to write (default batch.out).")] = None,
    restart: Annotated[bool, typer.Option("--restart", help="Drop an unfinished run's parts instead of resuming it.")] = False,
) -> None:
    """Batch recommendations: the champion's top-k for every user (or a list), to one Parquet file.

    Users are scored in chunks (batch.chunk_users), each written to its own part file: a killed run,
    started again, resumes from the parts written and writes no user twice. Each row says the model
    version and the data version it came from. With LLMREC_BATCH_DATABASE_URL set (a SQLAlchemy URL,
    e.g. postgresql+psycopg2://USER:PASSWORD@HOST:PORT/DB) the lists also replace the table batch.table
    there, in one transaction.
    """
    from llmrec.batch import recommend_all

    if all_users == (users is not None):
        typer.secho("error: give either --all-users or --users FILE", fg=typer.colors.RED, err=True)
        raise typer.Exit(2)
    if k is not None:
        State.overrides = [*State.overrides, f"batch.k={k}"]
    params = State.params()
    chosen = None
    if users is not None:
        if not users.is_file():
            typer.secho(f"error: no such file {users}", fg=typer.colors.RED, err=True)
            raise typer.Exit(1)
        chosen = [line.strip() for line in users.read_text().splitlines() if line.strip()]
    info = _run(recommend_all, params, users=chosen, out=out, restart=restart)
    rate = f", {info['users_per_second']:.0f} users/s" if info["users_per_second"] else ""
    resumed = f" (resumed: {info['resumed_chunks']} of {info['chunks']} chunks were written before)" if info["resumed_chunks"] else ""
    table = f" and table {info['table']}" if info["table"] else ""
    typer.echo(
        f"wrote {info['rows']:,} recommendations for {info['users']:,} users to {info['out']}{table}{resumed}: model "
        f"{params.tracking.model_name} v{info['model_version']}, data {info['data_version']}{rate}"
    )


def _retrain_once() -> tuple[dict, Any]:
    """Run the retrain flow once: its summary, and the PromotionAlert it ended with (None if none)."""
    from llmrec.errors import PromotionAlert

    def once() -> tuple[dict, Any]:
        try:
            return _retrain_flow()(State.params_file, State.overrides), None
        except PromotionAlert as alert:  # everything was recorded; the caller prints it, then fails
            return alert.summary, alert

    return _run(once)


def _exit_alert(alert: Any) -> None:
    typer.secho(str(alert), fg=typer.colors.RED, err=True)
    raise typer.Exit(1)


DEMO_BUDGET = "cpu-3min"


@app.command()
def demo(
    preset: Annotated[Optional[str], typer.Option(help="Synthetic size preset (default synthetic.preset).")] = None,
) -> None:
    """The story end to end: period 1 -> bootstrap a champion; period 2 arrives -> drift -> challenger -> decision.

    It trains the hybrid, llmrec's best ranker, at the budget cpu-3min unless --budget names another.
    """
    from llmrec.data.synthetic import generate as gen

    if State.params().budget is None:
        State.overrides = [f"budget={DEMO_BUDGET}", *State.overrides]  # --set still wins
    params = State.params()
    syn = params.synthetic.model_copy(update={"preset": preset} if preset else {})
    out = Path(params.data.path)
    import time

    rounds, alerts, minutes = [], [], []
    started = time.perf_counter()
    for period in (1, 2):
        if period == 1 and out.exists():
            shutil.rmtree(out)  # the demo's own synthetic folder: start the story from period 1
        _run(gen, out, _run(syn.size), syn.seed, (period,), collaborative=syn.collaborative)
        typer.secho(f"\n=== period {period} arrived in {out}/period{period}: retraining (round {period} of 2) ===", bold=True)
        round_start = time.perf_counter()
        summary, alert = _retrain_once()
        minutes.append((time.perf_counter() - round_start) / 60)
        typer.echo(format_summary(summary))
        rounds.append(summary)
        alerts.append(alert)
    typer.secho("\n=== demo summary ===", bold=True)
    for period, summary in enumerate(rounds, 1):
        d = summary["decision"]
        m = summary["evaluation"]["metrics"]
        versus = [f"{name} {m[name]['ndcg@10']:.4f}" for name in ("champion", "zero_shot", "tfidf", "popularity") if name in m]
        line = f"period {period}: model nDCG@10 {m['model']['ndcg@10']:.4f} vs {', '.join(versus)}"
        typer.echo(f"{line} -> v{summary['registered']['version']}: {d['action']} ({d['rule']})")
    typer.echo(f"the demo took {(time.perf_counter() - started) / 60:.1f} min (round 1: {minutes[0]:.1f} min, round 2: "
               f"{minutes[1]:.1f} min; the time per stage is printed after each round)")
    typer.echo("Look around: `make mlflow-ui` (models, runs, reports), outputs/ (reports), `dvc status`.")
    for alert in alerts:
        if alert is not None:
            _exit_alert(alert)


models_app = typer.Typer(help="Registered model versions and the `champion` alias (MLflow registry).", no_args_is_help=True)
data_app = typer.Typer(help="Data versions (DVC).", no_args_is_help=True)
app.add_typer(models_app, name="models")
app.add_typer(data_app, name="data")


def _model_name() -> str:
    return State.params().tracking.model_name


@models_app.command("list")
def models_list() -> None:
    """Every version, newest first: aliases, holdout nDCG@10 and AUC, data version, decision."""
    from llmrec import tracking

    versions = _run(tracking.list_versions, _model_name())
    typer.echo(f"{'version':>7}  {'aliases':<28} {'ndcg@10':>8} {'auc':>7}  {'holdout from':<16}  {'data (dvc md5)':<16} decision")
    for v in versions:
        typer.echo(
            f"{v.version:>7}  {','.join(v.aliases) or '-':<28} {v.metrics.get('ndcg_at_10', float('nan')):>8.4f} "
            f"{v.metrics.get('auc', float('nan')):>7.4f}  {v.tags.get('data.cutoff', '?')[:16].replace('T', ' '):<16}  "
            f"{v.tags.get('data.dvc_md5', '?')[:16]:<16} {v.tags.get('decision', '-')}"
        )
    if len({v.tags.get("data.cutoff") for v in versions}) > 1:
        typer.echo(
            "note: each version's nDCG@10 and AUC are on its own holdout (from the date shown), so versions with "
            "different holdouts are not comparable here; `llmrec retrain` scores the champion on the challenger's holdout "
            "(the decision record, `llmrec models show N`)"
        )


@models_app.command("show")
def models_show(version: Annotated[str, typer.Argument(help="Version number.")]) -> None:
    """Tags (lineage, decision), aliases and metrics of one version."""
    from llmrec import tracking

    info = _run(tracking.get_version, _model_name(), version=version)
    if info is None:
        typer.secho(f"error: no version {version}; see `llmrec models list`", fg=typer.colors.RED, err=True)
        raise typer.Exit(1)
    _echo_json({"version": info.version, "aliases": info.aliases, "run_id": info.run_id, "metrics": info.metrics,
                "tags": {k: v for k, v in info.tags.items() if k != "data.dvc_file"}})


@models_app.command("promote")
def models_promote(
    version: Annotated[str, typer.Argument(help="Version to make champion.")],
    reason: Annotated[str, typer.Option(help="Why (recorded with the alias move).")] = "manual promotion",
) -> None:
    """Make a version the champion by hand; the old champion becomes `previous`."""
    from llmrec import tracking

    if _run(tracking.get_version, _model_name(), version=version) is None:
        typer.secho(f"error: no version {version}; see `llmrec models list`", fg=typer.colors.RED, err=True)
        raise typer.Exit(1)
    old = _run(tracking.promote, _model_name(), version, reason)
    typer.echo(f"champion: v{old} -> v{version}" if old else f"champion: v{version}")


@models_app.command("rollback")
def models_rollback() -> None:
    """Move `champion` back to the `previous` version in one step (run again to undo)."""
    from llmrec import tracking

    old, new = _run(tracking.rollback, _model_name())
    typer.echo(f"champion: v{old} -> v{new} (v{old} is now `previous`)")


@data_app.command("checkout")
def data_checkout(
    model_version: Annotated[
        Optional[str], typer.Option("--model-version", "-m", help="Registered model version whose data to restore.")
    ] = None,
    latest: Annotated[
        bool, typer.Option("--latest", help="Back to the data as it was before `data checkout --model-version` replaced it.")
    ] = False,
) -> None:
    """Restore data/ byte-for-byte to what a model version was trained on (current data is snapshotted first)."""
    from llmrec import pipeline

    if (model_version is None) == (not latest):
        typer.secho("error: give either --model-version N or --latest", fg=typer.colors.RED, err=True)
        raise typer.Exit(2)
    if latest:
        info = _run(pipeline.restore_latest_data)
        typer.echo(f"data/ back to {info['dvc_md5']}, the data before `llmrec data checkout`.")
        return
    info = _run(pipeline.checkout_model_data, State.params(), model_version)
    back = " Back to the data you had: `llmrec data checkout --latest`." if info["snapshot"] else ""
    typer.echo(
        f"data/ restored to {info['dvc_md5']}, the data of version {info['version']} ({info['data_path']}, "
        f"git {str(info['git_revision'])[:10]}).{back}"
    )


@app.command()
def serve(
    host: Annotated[Optional[str], typer.Option(help="Address to bind (default serve.host: 127.0.0.1; 0.0.0.0 exposes it).")] = None,
    port: Annotated[Optional[int], typer.Option(min=1, max=65535, help="Port (default serve.port: 8000).")] = None,
    alias: Annotated[Optional[str], typer.Option(help="Registry alias to serve and follow (default serve.alias: champion).")] = None,
    poll_seconds: Annotated[
        Optional[float], typer.Option(help="How often to check whether the alias moved (default serve.poll_seconds: 10).")
    ] = None,
) -> None:
    """REST API over the `champion`: POST /recommend, GET /health, GET /model, docs at /docs.

    When the alias moves (promotion, rollback) the server loads the new version in the
    background and switches without dropping requests. Request limits are serve.limits.* in
    params.yaml (e.g. --set serve.limits.max_candidates=500).
    """
    from llmrec.serving import serve as run_server

    params = State.params()
    given = {"host": host, "port": port, "alias": alias, "poll_seconds": poll_seconds}
    settings = params.serve.model_copy(update={k: v for k, v in given.items() if v is not None})
    _run(run_server, model_name=params.tracking.model_name, settings=settings)


def _retrain_flow():
    # The CLI is the one place that reaches into flows/: the library itself never imports Prefect.
    from flows.retrain import retrain as retrain_flow

    return retrain_flow


def format_summary(summary: dict) -> str:
    """A readable account of one retrain run."""
    ev = summary["evaluation"]
    drift_info = summary["drift"]
    lines = [
        "",
        ev["markdown"],
        "",
        f"registered: {summary['registered']['name']} version {summary['registered']['version']} "
        f"(data {summary['data_version']['dvc_md5']}, git {summary['data_version']['git_revision'][:10]})",
        "drift: " + (drift_info.get("summary") or drift_info.get("skipped", "")),
        summary["decision"]["summary"],
    ]
    if summary.get("seconds"):
        lines.append("time per stage: " + ", ".join(f"{name} {seconds:.0f} s" for name, seconds in summary["seconds"].items())
                     + f" (total {sum(summary['seconds'].values()):.0f} s)")
    return "\n".join(lines)


def run() -> None:  # console-script entry point
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    run()
