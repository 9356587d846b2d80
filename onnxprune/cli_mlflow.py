"""`onnxprune mlflow ...`: prune versions of an MLflow model registry, and the webhook receiver that does it for
each new version. The commands are always listed; without onnxprune[mlflow] they fail with one line saying so.

Exit codes as in cli.py: 0 every job registered (or found made before) and every gate passed, 1 bad input or a
failed job (the others still run), 4 a gate failed (the version is registered, without the alias).
"""

from __future__ import annotations

import contextlib
import json
import logging
import sys

import click

from .cli_options import calib_option, executor_options, recovery_options, shape_option, structured_prune_options
from .errors import OnnxPruneError, OptionError, VerificationError


class JobsFailedError(OnnxPruneError):
    """One or more registry jobs failed (each is reported on its own line)."""


@click.group("mlflow")
def mlflow_group() -> None:
    """Prune models in an MLflow model registry (needs onnxprune[mlflow]; --executor ray needs onnxprune[ray])."""


@mlflow_group.command("prune")
@click.argument("sources", nargs=-1)
@click.option("--filter", "filter_string", default=None, metavar="FILTER",
              help="Also every version matching this registry search, e.g. \"name LIKE 'vision-%'\" "
                   "(versions onnxprune made are left out).")
@structured_prune_options
@calib_option
@recovery_options
@shape_option()
@click.option("--policy", type=click.Path(dir_okay=False), default=None,
              help="The gate (TOML, as for `onnxprune check`); its bench settings time the models.")
@click.option("--register-as", default=None, metavar="NAME",
              help="Registered model for the pruned versions [default: the source's own].")
@click.option("--alias", default=None, help="Set this alias on a pruned version whose gate passed (needs --policy).")
@click.option("--experiment", default=None, help="MLflow experiment of the runs [default: MLflow's].")
@click.option("--tracking-uri", default=None, help="MLflow tracking server [default: $MLFLOW_TRACKING_URI].")
@executor_options
@click.option("--json", "as_json", is_flag=True, help="Print the results as JSON.")
def prune_cmd(sources, filter_string, shapes, policy, register_as, alias, experiment, tracking_uri, executor,
              ray_address, as_json, **options):
    """Prune registry versions and register each result as a new version with its lineage.

    SOURCES are models:/NAME/VERSION, models:/NAME@ALIAS, or NAME (its latest version); with --filter, every
    version the search matches as well. One job per version: download, prune, gate (--policy), benchmark, log a
    run (params, metrics, the card, the plan and the bench JSON), register the pruned model (ONNX flavor, the
    source's signature, lineage tags), set --alias when the gate passed. A version this recipe already made is
    not made again.
    """
    from .integrations import require
    from .integrations.jobs import Job, run_jobs
    from .integrations.mlflow_registry import Registry
    from .integrations.recipe import Recipe

    require("mlflow", "mlflow")
    if not sources and not filter_string:
        raise OptionError("no version given: name models:/NAME/VERSION, models:/NAME@ALIAS or NAME, or give --filter")
    recipe = Recipe.from_options({**options, "shape": list(shapes), "policy": policy})
    if alias is not None and recipe.policy is None:
        raise OptionError("--alias is set only when the gate passes: give the gate with --policy")
    registry = Registry(tracking_uri)
    refs = registry.select(sources, filter_string)
    if not refs:
        raise OptionError(f"--filter {filter_string!r} matches no version (other than ones onnxprune made)")
    jobs = [Job(ref, recipe, register_as, alias, registry.tracking_uri, None, experiment) for ref in refs]
    say = (lambda message: click.echo(message, err=True))
    say(f"{len(jobs)} job(s), executor {executor}")
    with contextlib.redirect_stdout(sys.stderr):  # MLflow prints run links on stdout; stdout is for results
        results = run_jobs(jobs, executor, ray_address=ray_address, progress=None if as_json else say)
    if as_json:
        click.echo(json.dumps([r.to_dict() for r in results], indent=2))
    failed = [r for r in results if r.status == "failed"]
    gated = [r for r in results if r.gate == "fail"]
    if failed:
        raise JobsFailedError(f"{len(failed)} of {len(results)} job(s) failed: "
                              + "; ".join(f"{r.source}: {r.message}" for r in failed))
    if gated:
        raise VerificationError(f"the gate failed for {len(gated)} of {len(results)} version(s): "
                                + "; ".join(f"{r.uri}: {r.message}" for r in gated) + " (registered without the alias)")


@mlflow_group.command("serve-hook")
@click.option("--config", "config_path", required=True, type=click.Path(dir_okay=False),
              help="The receiver's TOML config: the models to watch and the recipe for each (docs/registry.md).")
def serve_hook_cmd(config_path):
    """Receive the registry's "model version created" webhooks and prune each new version of a watched model.

    Deliveries must be signed with the webhook's secret (read from the environment variable the config names);
    the jobs run one at a time, and their state is kept beside the config so a restart resumes them.
    """
    from .integrations import require
    from .integrations.mlflow_hook import load_config, serve

    require("mlflow", "mlflow")
    config = load_config(config_path)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    logger = logging.getLogger("onnxprune.hook")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        serve(config)
    except OSError as exc:
        raise OptionError(f"cannot listen on {config.host}:{config.port}: {exc.strerror or exc}") from None
