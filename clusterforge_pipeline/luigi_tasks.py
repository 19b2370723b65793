"""The file pipeline as Luigi tasks, scheduled by the central scheduler ``luigid``.

``Generate -> Process -> Aggregate -> Verify``: each task runs one pipeline step in the cluster venv
(see ``orchestrate``) and writes its JSON result as its target, so a rerun with the same run id
resumes where it stopped. ``python -m clusterforge_pipeline.luigi_tasks --run-id ID`` runs the chain
through the scheduler named in the Luigi configuration (``$LUIGI_CONFIG_PATH``, ``[core]
scheduler_url``), removes the generated files, and prints the outcome as one JSON line.

Runs inside the Luigi venv: standard library and luigi only.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

import luigi

from .orchestrate import MARKER, run_step, summary_of
from .spec import Spec, load_config, safe_name

DEFAULT_OUTPUT_DIR = "/var/tmp/clusterforge-luigi"
TASK_NAMES = ("Generate", "Process", "Aggregate", "Verify")


class PipelineTask(luigi.Task):
    run_id = luigi.Parameter(description="pipeline run id (names the files and targets)")
    files = luigi.IntParameter(default=Spec.files)
    mib = luigi.IntParameter(default=Spec.mib)
    seed = luigi.IntParameter(default=Spec.seed)
    output_dir = luigi.Parameter(default=DEFAULT_OUTPUT_DIR, significant=False)

    step = ""

    def spec(self) -> Spec:
        return Spec(files=int(self.files), mib=int(self.mib), seed=int(self.seed))

    def payload(self, **extra: Any) -> dict[str, Any]:
        return {"run_id": self.run_id, "spec": self.spec().to_dict(), **extra}

    def output(self) -> luigi.LocalTarget:
        return luigi.LocalTarget(os.path.join(self.output_dir, safe_name(self.run_id), f"{self.step}.json"))

    def upstream(self) -> dict[str, Any]:
        with self.input().open("r") as handle:
            return json.load(handle)

    def save(self, result: dict[str, Any]) -> None:
        with self.output().open("w") as handle:
            json.dump(result, handle, sort_keys=True)

    def parents(self) -> dict[str, Any]:
        return {"run_id": self.run_id, "files": self.files, "mib": self.mib, "seed": self.seed}


class Generate(PipelineTask):
    step = "generate"

    def run(self) -> None:
        self.save(run_step("generate", self.payload()))


class Process(PipelineTask):
    step = "process"

    def requires(self) -> Generate:
        return Generate(output_dir=self.output_dir, **self.parents())

    def run(self) -> None:
        generated = self.upstream()
        result = run_step("process", self.payload(manifest=generated["manifest"]))
        result["generate_backend"] = generated["backend"]
        result["generate_hosts"] = sorted({m["host"] for m in generated["manifest"]})
        self.save(result)


class Aggregate(PipelineTask):
    step = "aggregate"

    def requires(self) -> Process:
        return Process(output_dir=self.output_dir, **self.parents())

    def run(self) -> None:
        processed = self.upstream()
        result = run_step("aggregate", self.payload(partials=processed["partials"]))
        result["process_backend"] = processed["backend"]
        result["process_hosts"] = sorted({p["host"] for p in processed["partials"]})
        result["generate_backend"] = processed["generate_backend"]
        result["generate_hosts"] = processed["generate_hosts"]
        result["regenerated"] = sum(1 for p in processed["partials"] if p.get("regenerated"))
        self.save(result)


class Verify(PipelineTask):
    step = "verify"

    def requires(self) -> Aggregate:
        return Aggregate(output_dir=self.output_dir, **self.parents())

    def run(self) -> None:
        aggregated = self.upstream()
        verdict = run_step("verify", self.payload(totals=aggregated["totals"], digests=aggregated["digests"]))
        if not verdict["ok"]:
            raise ValueError("pipeline answer is wrong: " + "; ".join(verdict["problems"]))
        self.save(summary_of(verdict, aggregated))


def remove_targets(output_dir: str, run_id: str) -> None:
    directory = os.path.join(output_dir, safe_name(run_id))
    if os.path.isdir(directory):
        for name in os.listdir(directory):
            os.remove(os.path.join(directory, name))
        os.rmdir(directory)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m clusterforge_pipeline.luigi_tasks", description=__doc__)
    parser.add_argument("--run-id", required=True)
    parser.add_argument("--files", type=int, default=Spec.files)
    parser.add_argument("--mib", type=int, default=Spec.mib)
    parser.add_argument("--seed", type=int, default=Spec.seed)
    parser.add_argument("--output-dir", default=DEFAULT_OUTPUT_DIR)
    parser.add_argument("--keep", action="store_true", help="keep the generated files and targets")
    args = parser.parse_args(argv)
    task = Verify(
        run_id=args.run_id, files=args.files, mib=args.mib, seed=args.seed, output_dir=args.output_dir
    )
    outcome = luigi.build([task], workers=1, local_scheduler=False, detailed_summary=True)
    result: dict[str, Any] = {
        "run_id": args.run_id,
        "luigi_status": outcome.status.name,
        "scheduling_succeeded": bool(outcome.scheduling_succeeded),
        "summary": outcome.summary_text,
        "verify": None,
    }
    if task.complete():
        with task.output().open("r") as handle:
            result["verify"] = json.load(handle)
    if not args.keep:
        try:
            run_step("cleanup", {"run_id": args.run_id, "spec": task.spec().to_dict()}, load_config())
        except Exception as exc:
            result["cleanup_error"] = str(exc)
        remove_targets(args.output_dir, args.run_id)
    sys.stdout.flush()
    print(MARKER)
    print(json.dumps(result, sort_keys=True))
    return 0 if result["verify"] is not None else 1


if __name__ == "__main__":
    sys.exit(main())
