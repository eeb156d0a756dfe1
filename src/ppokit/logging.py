"""Run logging: TensorBoard and CSV always, Weights & Biases on request, and console progress."""

from __future__ import annotations

import csv
import os
import sys
import time
from pathlib import Path
from typing import Any

from ppokit.config import LogConfig
from ppokit.outputs import write_error


class CSVWriter:
    """metrics.csv with one row per update, its columns in the order declared up front (a run's
    episode metrics appear after its first rows, but their column is there from the start).

    Rows are only ever appended. Two changes rewrite the file, both as a new file renamed over
    the old one, so a fault leaves the old file or the new one and never a truncated one: a key
    nobody declared (a user callback's metric) adds a column, and a resume drops the rows written
    after its checkpoint (`drop_after`)."""

    def __init__(self, path: Path, columns: list[str] | None = None) -> None:
        self.path = path
        self.columns: list[str] = []
        if path.exists():  # resuming: keep the rows written so far
            with path.open() as f:
                self.columns = next(csv.reader(f), [])
        if not self.columns and columns:
            self.columns = list(columns)
            self._replace([])

    def _rows(self) -> list[dict[str, str]]:
        if not self.path.exists() or not self.columns:
            return []
        with self.path.open() as f:
            return list(csv.DictReader(f))

    def _replace(self, rows: list[dict[str, Any]]) -> None:
        """Write header and `rows` to a temp file and rename it over metrics.csv."""
        tmp = self.path.with_name(f".{self.path.name}.tmp")
        try:
            with tmp.open("w", newline="") as f:
                writer = csv.DictWriter(f, fieldnames=self.columns)
                writer.writeheader()
                writer.writerows(rows)
            os.replace(tmp, self.path)
        except OSError as e:
            tmp.unlink(missing_ok=True)
            raise write_error(self.path, "metrics", e) from None

    def drop_after(self, step: int) -> int:
        """Remove the rows of steps after `step` (written after the checkpoint a run resumes
        from, so each step appears once); returns how many were dropped."""
        rows = self._rows()
        kept = [r for r in rows if not r.get("global_step") or int(r["global_step"]) <= step]
        if len(kept) != len(rows):
            self._replace(kept)
        return len(rows) - len(kept)

    def write(self, row: dict[str, Any]) -> None:
        new = [k for k in row if k not in self.columns]
        if new:
            rows = self._rows()
            self.columns += new
            self._replace(rows)
        try:
            with self.path.open("a", newline="") as f:
                csv.DictWriter(f, fieldnames=self.columns).writerow(row)
        except OSError as e:
            raise write_error(self.path, "metrics", e) from None


class Progress:
    """A rich progress bar on a terminal; periodic one-line summaries elsewhere (CI, pipes)."""

    def __init__(self, total_steps: int, start_step: int, enabled: bool) -> None:
        self.total = total_steps
        self.enabled = enabled
        self.live = enabled and sys.stdout.isatty()
        self.last_print = 0.0
        self.bar = None
        if self.live:
            from rich.progress import BarColumn, TextColumn, TimeRemainingColumn
            from rich.progress import Progress as RichProgress

            self.bar = RichProgress(
                TextColumn("[bold]train"),
                BarColumn(),
                TextColumn("{task.completed:,.0f}/{task.total:,.0f} steps"),
                TextColumn("{task.fields[sps]:>7,.0f} SPS"),
                TextColumn("return {task.fields[ret]}"),
                TimeRemainingColumn(),
            )
            self.task = self.bar.add_task(
                "train", total=total_steps, completed=start_step, sps=0.0, ret="-"
            )
            self.bar.start()

    def update(self, step: int, sps: float, mean_return: float | None) -> None:
        ret = f"{mean_return:.1f}" if mean_return is not None else "-"
        if self.bar is not None:
            self.bar.update(self.task, completed=step, sps=sps, ret=ret)
        elif self.enabled and (time.monotonic() - self.last_print > 10 or step >= self.total):
            self.last_print = time.monotonic()
            pct = 100.0 * step / self.total
            eta = (self.total - step) / sps if sps > 0 else float("nan")
            print(
                f"step {step:,}/{self.total:,} ({pct:.0f}%)  {sps:,.0f} SPS  return {ret}  ETA {eta:.0f}s",
                flush=True,
            )

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()


class RunLogger:
    """Writes scalar metrics of each update to TensorBoard, CSV and optionally W&B."""

    def __init__(
        self,
        run_dir: Path,
        cfg: LogConfig,
        config_dict: dict,
        run_name: str,
        metric_names: list[str] | None = None,
        resume_step: int | None = None,
    ) -> None:
        """`resume_step`: the step of the checkpoint a resumed run continues from; what was
        logged after it (by the interrupted process) is dropped, so each step appears once."""
        from torch.utils.tensorboard import SummaryWriter

        self.run_dir = run_dir
        purge = None if resume_step is None else resume_step + 1
        self.tb = SummaryWriter(log_dir=str(run_dir), purge_step=purge)
        columns = ["global_step", *metric_names] if metric_names else None
        self.csv = CSVWriter(run_dir / "metrics.csv", columns)
        if resume_step is not None:
            self.csv.drop_after(resume_step)
        self.wandb_run = None
        if cfg.wandb and cfg.wandb_mode != "disabled":
            from ppokit.extras import require

            wandb = require("wandb", "wandb", "--log.wandb")
            self.wandb_run = wandb.init(
                project=cfg.wandb_project,
                name=run_name,
                config=config_dict,
                dir=str(run_dir),
                mode=cfg.wandb_mode,
                resume="allow",
                id=run_name.replace("/", "-"),
            )

    def log(self, step: int, metrics: dict[str, float]) -> None:
        for key, value in metrics.items():
            self.tb.add_scalar(key, value, step)
        self.csv.write({"global_step": step, **metrics})
        if self.wandb_run is not None:
            self.wandb_run.log(metrics, step=step)

    def close(self) -> None:
        self.tb.close()
        if self.wandb_run is not None:
            self.wandb_run.finish()


def check_wandb(cfg: LogConfig) -> None:
    """Fail in one line, before a run directory exists, when `--log.wandb true` cannot work: the
    wandb package is missing, or online mode has no API key (wandb.init would stop with a
    traceback after the run directory was made)."""
    from ppokit.errors import ConfigError
    from ppokit.extras import require

    if not cfg.wandb or cfg.wandb_mode == "disabled":
        return
    wandb = require("wandb", "wandb", "--log.wandb")
    if cfg.wandb_mode == "online" and not _wandb_credentials(wandb):
        raise ConfigError(
            "--log.wandb true logs online to W&B, which needs an API key, and none is"
            " configured (WANDB_API_KEY, or ~/.netrc from `wandb login`): run `wandb login`,"
            " or log locally with --log.wandb_mode offline"
        )


def _wandb_credentials(wandb: Any) -> bool:
    """Whether wandb finds credentials without prompting: WANDB_API_KEY, an identity token
    file, or the key in its settings or its netrc entry for its server (wandb.api.api_key reads
    those as wandb.init does). True when that cannot be told: wandb.init decides then."""
    import contextlib
    import io
    import os
    import warnings

    if os.environ.get("WANDB_API_KEY") or os.environ.get("WANDB_IDENTITY_TOKEN_FILE"):
        return True
    try:
        # wandb 0.31 prints a deprecation note for wandb.api; its api_key lookup is current.
        with contextlib.redirect_stderr(io.StringIO()), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return bool(wandb.api.api_key)
    except Exception:  # an API that moved: no answer
        return True
