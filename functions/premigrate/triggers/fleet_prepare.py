"""The fleet's first step: the execution's input and the manifest checked whole (the manifest read once:
an S3 object pinned by its version, or the targets inline), then the rollout laid out in S3 for the Map
states to read, under ``runs/<rollout>/``:

- ``plan/targets.json``: every database, for Plan;
- ``waves/<n>/groups.json``: wave n's server groups, for the wave's outer Map; each group's databases in
  ``waves/<n>/<group>.json``, for its inner Map.

A server group is one named server with more databases in the wave than ``per_server`` (its inner Map runs
``per_server`` of them at once, so that server never has more), or the pool of all the others (run
``concurrency`` at once: none of their servers can get more than ``per_server`` from it). A wave's failure
budget applies to each group; wave 0, the canary, tolerates none.
"""

from __future__ import annotations

import json
import os
import urllib.parse
from collections.abc import Callable
from typing import Any

from premigrate.adapters.fleet_store import FleetStore
from premigrate.adapters.folder import load_folder
from premigrate.adapters.manifest_source import read_manifest
from premigrate.engine import ConfigurationError
from premigrate.fleet.manifest import Target, parse_manifest
from premigrate.fleet.rollout import waves
from premigrate.service.settings import resolve_path
from premigrate.triggers.direct import check_keys
from premigrate.triggers.fleet import settings
from premigrate.triggers.invocation import function_config, logger, refused

BUCKET_ENV = "PREMIGRATE_FLEET_BUCKET"
"""The fleet bucket of this stack (template.yaml sets it when EnableFleet is true)."""
MANIFESTS = "manifests/"
RUNS = "runs/"
INPUT_KEYS = (
    "manifest",
    "targets",
    "dry_run",
    "concurrency",
    "per_server",
    "tolerated_failure_percentage",
    "lock_retry_seconds",
    "settings",
    "migration_set",
    "request",
)
# (default, lowest, highest): MaxConcurrency beyond Lambda's default account concurrency (1,000) would only be
# throttled; a per-server limit above 40 is no limit on an RDS server.
_NUMBERS: dict[str, tuple[float, float, float]] = {
    "concurrency": (8, 1, 1000),
    "per_server": (2, 1, 40),
    "tolerated_failure_percentage": (0, 0, 100),
    "lock_retry_seconds": (30, 0, 3600),
}


def prepare(event: dict[str, Any], time_left: Callable[[], float]) -> dict[str, Any]:
    """The state machine's state after Prepare: ``prepared`` (ok, or the error that stops the rollout before
    any database is touched), the wave loop's counter, and no failure yet."""
    try:
        prepared = _prepare(event)
    except Exception as error:
        refusal = refused(error)
        prepared = {"ok": False, "error": refusal.error, "error_kind": str(refusal.error_kind)}
    return {"prepared": prepared, "loop": {"wave_index": 0}, "failure": None}


def _prepare(event: dict[str, Any]) -> dict[str, Any]:
    check_keys(event, ("fleet", "input", "rollout"), "the fleet's prepare step")
    bucket = os.environ.get(BUCKET_ENV) or ""
    if not bucket:
        raise ConfigurationError(f"{BUCKET_ENV} is not set: deploy the stack with EnableFleet=true")
    given, rollout = event.get("input"), event.get("rollout")
    if not isinstance(given, dict):
        raise ConfigurationError('the execution\'s input must be a JSON object, like {"manifest": "s3://..."}')
    if not isinstance(rollout, str) or not rollout or "/" in rollout:
        raise ConfigurationError(f"the rollout needs the execution's name, not {rollout!r}")
    check_keys(given, INPUT_KEYS, "a fleet rollout's input")
    options = {key: _number(given, key, *limits) for key, limits in _NUMBERS.items()}
    dry_run = given.get("dry_run", False)
    if not isinstance(dry_run, bool):
        raise ConfigurationError("'dry_run' must be true or false")
    run_settings = settings(given.get("settings"))
    config = function_config(run_settings, "the rollout's")  # refuses a bad phase, target or lock wait now
    fingerprint = load_folder(resolve_path(config.migrations, os.environ.get("LAMBDA_TASK_ROOT"))).fingerprint
    expected = given.get("migration_set")
    if expected is not None and expected != fingerprint:
        raise ConfigurationError(
            f"the rollout asks for migration set {expected!r}, but this function holds {fingerprint!r}: deploy the "
            "function with that set first; no database was touched"
        )
    targets = _targets(given, bucket)
    common = {"rollout": rollout, "fingerprint": fingerprint, "settings": run_settings}
    layout = _Layout(FleetStore(bucket), f"{RUNS}{rollout}", common, options)
    prepared = layout.write(targets)
    logger.info("fleet prepared", extra={"databases": len(targets), "waves": prepared["wave_count"]})
    return {"ok": True, "bucket": bucket, "databases": len(targets), "dry_run": dry_run, **common, **prepared}


def _targets(given: dict[str, Any], bucket: str) -> list[Target]:
    if ("manifest" in given) == ("targets" in given):
        raise ConfigurationError(
            'give the targets either as "manifest": "s3://bucket/manifests/...?versionId=V" or inline as "targets": '
            "[{...}, ...], one of them"
        )
    if "targets" in given:
        inline = given["targets"]
        if not isinstance(inline, list):
            raise ConfigurationError("'targets' must be a list of objects, one per database")
        # The same checks as a manifest file's, "line N" being the Nth target.
        return parse_manifest("\n".join(json.dumps(item) for item in inline) or "\n", allow_urls=False)
    location = given["manifest"]
    if not isinstance(location, str):
        raise ConfigurationError("'manifest' must be text: s3://bucket/manifests/key?versionId=V")
    parsed = urllib.parse.urlsplit(location)
    pinned = urllib.parse.parse_qs(parsed.query).get("versionId", [""])[0]
    if parsed.scheme != "s3" or parsed.netloc != bucket or not parsed.path.startswith(f"/{MANIFESTS}") or not pinned:
        raise ConfigurationError(
            f"the manifest must be an object of the fleet bucket, pinned by its version: s3://{bucket}/{MANIFESTS}"
            "<key>?versionId=<version> (a redriven or repeated rollout then reads the very same targets)"
        )
    return parse_manifest(read_manifest(location), allow_urls=False)


def _number(given: dict[str, Any], key: str, default: float, lowest: float, highest: float) -> float:
    value = given.get(key, default)
    whole = key != "tolerated_failure_percentage"
    kinds = (int,) if whole else (int, float)
    if isinstance(value, bool) or not isinstance(value, kinds) or not lowest <= value <= highest:
        kind = "a whole number" if whole else "a number"
        raise ConfigurationError(f"{key!r} must be {kind} from {lowest:g} to {highest:g}, not {value!r}")
    return value


class _Layout:
    """Writes the rollout's item files and says where they are."""

    def __init__(self, store: FleetStore, root: str, common: dict[str, Any], options: dict[str, float]) -> None:
        self.store, self.root, self.common, self.options = store, root, common, options

    def write(self, targets: list[Target]) -> dict[str, Any]:
        files: dict[str, object] = {f"{self.root}/plan/targets.json": [t.to_dict() for t in targets]}
        described = []
        for number, members in waves(targets):
            groups = self._groups(number, members)
            files[f"{self.root}/waves/{number:02d}/groups.json"] = [group for group, _ in groups]
            files.update({group["items_key"]: [t.to_dict() for t in items] for group, items in groups})
            described.append(self._wave(number, len(members), [group for group, _ in groups]))
        self.store.put_many(files)
        return {
            "concurrency": int(self.options["concurrency"]),
            "plan": {"items_key": f"{self.root}/plan/targets.json", "results_prefix": f"{self.root}/results/plan"},
            "waves": described,
            "wave_count": len(described),
        }

    def _groups(self, number: int, members: list[Target]) -> list[tuple[dict[str, Any], list[Target]]]:
        per_server = int(self.options["per_server"])
        by_server: dict[str, list[Target]] = {}
        for target in members:
            by_server.setdefault(target.server_key, []).append(target)
        big = [(server, items) for server, items in by_server.items() if len(items) > per_server]
        crowded = {server for server, _ in big}
        pool = [target for target in members if target.server_key not in crowded]
        chosen = ([(None, pool)] if pool else []) + big
        return [(self._group(number, index, server, len(items)), items) for index, (server, items) in enumerate(chosen)]

    def _group(self, number: int, index: int, server: str | None, size: int) -> dict[str, Any]:
        name = f"g{index:05d}"
        percentage = 0 if number == 0 else self.options["tolerated_failure_percentage"]  # the canary: none
        at_once = int(self.options["concurrency"] if server is None else self.options["per_server"])
        return {
            **self.common,
            "wave": number,
            "group": name,
            "server": server,
            "databases": size,
            "items_key": f"{self.root}/waves/{number:02d}/{name}.json",
            "results_prefix": f"{self.root}/results/wave-{number:02d}/{name}",
            "max_concurrency": at_once,
            "tolerated_failure_percentage": percentage,
            "lock_retry_seconds": int(self.options["lock_retry_seconds"]),
        }

    def _wave(self, number: int, size: int, groups: list[dict[str, Any]]) -> dict[str, Any]:
        servers = sum(group["server"] is not None for group in groups)
        # Big servers at once, so that about `concurrency` of their databases run together; the pool beside them.
        at_once = min(servers, max(1, int(self.options["concurrency"] // self.options["per_server"])))
        return {
            "wave": number,
            "databases": size,
            "groups": len(groups),
            "groups_key": f"{self.root}/waves/{number:02d}/groups.json",
            "results_prefix": f"{self.root}/results/wave-{number:02d}/groups",
            "groups_at_once": max(at_once + (len(groups) - servers), 1),
            "tolerated_failure_percentage": 0 if number == 0 else self.options["tolerated_failure_percentage"],
        }
