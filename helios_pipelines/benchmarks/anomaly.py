"""``helios bench anomaly``: run Helios' detector online over a NAB-format directory and score it.

Every labelled file found under ``--data`` (``<category>/<name>.csv`` with ``timestamp,value``) is
scored exactly as its rows stand: never sorted, de-duplicated or resampled. The detector is the one
the pipeline trains and ``/detect`` serves (CombinedDetector, default sensitivity: on one metric its
multi-view rarity score, RarityDetector), fitted on the file's NAB probationary period (its first 15 %, the rows NAB gives detectors to learn from) and
then run causally over the whole file. Probation rows are training data, so they get score 0 (NAB
ignores them). The only NAB-specific setting is ``onset_window``: NAB counts the first detection
of a window only, so the benchmark reports onsets of anomalies, over a third of the probation.
"""

from __future__ import annotations

import time
from pathlib import Path

import click
import numpy as np
import pandas as pd

from helios_pipelines.benchmarks import nab
from helios_pipelines.core.ml.models.detectors import CombinedDetector

VALUE_COLUMN = "value"


def onset_window_for(probation: int) -> int:
    return max(probation // 3, 1)


def score_file(path: Path) -> pd.DataFrame:
    """``timestamp,value,anomaly_score`` for every row of one NAB file, in file order."""
    raw = pd.read_csv(path, dtype={"timestamp": str})
    if list(raw.columns[:2]) != ["timestamp", VALUE_COLUMN]:
        raise click.ClickException(f"{path}: expected columns timestamp,value, got {list(raw.columns)}")
    frame = pd.DataFrame(
        {VALUE_COLUMN: pd.to_numeric(raw[VALUE_COLUMN], errors="coerce").to_numpy()},
        index=pd.DatetimeIndex(pd.to_datetime(raw["timestamp"])),
    )
    probation = nab.probation_rows(len(frame))
    detector = CombinedDetector(onset_window=onset_window_for(probation))
    detector.fit(frame.iloc[:probation])
    score = detector.score(frame)["combined"].to_numpy()
    score[:probation] = 0.0
    return pd.DataFrame(
        {"timestamp": raw["timestamp"], VALUE_COLUMN: raw[VALUE_COLUMN], "anomaly_score": np.nan_to_num(score, nan=0.0)}
    )


def results_table(results: dict[str, nab.ProfileResult], n_files: int, seconds: float) -> list[str]:
    lines = [
        f"{n_files} files, scored in {seconds:.1f} s",
        f"{'profile':<20} {'threshold':>10} {'raw':>9} {'null':>7} {'perfect':>8} {'windows hit':>12} {'FP rows':>8} {'NAB':>7}",
    ]
    for r in results.values():
        lines.append(
            f"{r.profile:<20} {r.threshold:>10.4f} {r.raw:>9.3f} {r.null:>7.1f} {r.perfect:>8.1f} "
            f"{f'{r.true_positives}/{r.true_positives + r.false_negatives}':>12} {r.false_positives:>8} {r.score:>7.2f}"
        )
    lines.append("NAB " + " ".join(f"{name}={r.score:.2f}" for name, r in results.items()))
    return lines


@click.command("anomaly")
@click.option("--data", "data_dir", required=True, type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="NAB-format data directory: <category>/<name>.csv with timestamp,value")
@click.option("--labels", "labels_path", required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="NAB windows file (combined_windows.json)")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="where <category>/<name>.csv with timestamp,value,anomaly_score are written")
def anomaly(data_dir: Path, labels_path: Path, out_dir: Path) -> None:
    """Score Helios' anomaly detector with the Numenta Anomaly Benchmark's method."""
    started = time.perf_counter()
    windows = nab.load_windows(labels_path)
    labelled = sorted(name for name in windows if (data_dir / name).is_file())
    if not labelled:
        raise click.ClickException(f"no file of {labels_path} was found under {data_dir}")
    files = []
    for name in labelled:
        scored = score_file(data_dir / name)
        target = out_dir / name
        target.parent.mkdir(parents=True, exist_ok=True)
        scored.to_csv(target, index=False)
        rows = nab.window_rows(scored["timestamp"], windows[name])
        files.append(nab.LabelledFile(name, scored["anomaly_score"].to_numpy(), tuple(rows)))
    results = nab.score_all_profiles(files)
    for line in results_table(results, len(files), time.perf_counter() - started):
        click.echo(line)
