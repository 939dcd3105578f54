"""The Numenta Anomaly Benchmark's scoring method, written from ``../shared/data/nab/SCORING.md``.

Everything is measured in rows in file order (never wall-clock time): window widths, distances from
a window and the probationary period. A detector is scored by pooling every file, sweeping every
candidate threshold (section 8.1, the current NAB method) and normalising the best raw score between
the null detector (no detection) and the perfect one (a detection on the first row of every window)
of the scored set of files.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

#: Threshold candidate that detects nothing (scores live in [0, 1]).
NO_DETECTION_THRESHOLD = 1.1
#: The probationary period is 15 % of a file, capped at 15 % of 5000 rows.
PROBATION_SHARE = 0.15
PROBATION_CAP = 750
NOT_IN_WINDOW = -1


@dataclass(frozen=True)
class Profile:
    """Weights of an application profile (NAB's ``config/profiles.json``)."""

    name: str
    a_tp: float
    a_fp: float
    a_fn: float


PROFILES: dict[str, Profile] = {
    p.name: p
    for p in (
        Profile("standard", a_tp=1.0, a_fp=0.11, a_fn=1.0),
        Profile("reward_low_FP_rate", a_tp=1.0, a_fp=0.22, a_fn=1.0),
        Profile("reward_low_FN_rate", a_tp=1.0, a_fp=0.11, a_fn=2.0),
    )
}


def scaled_sigmoid(y: float | np.ndarray) -> float | np.ndarray:
    """``2*sig(-5y) - 1`` for ``y <= 3``, ``-1`` beyond: 0 at y = 0, decreasing in y."""
    y_arr = np.asarray(y, dtype=float)
    value = np.where(y_arr > 3, -1.0, 2.0 / (1.0 + np.exp(5.0 * y_arr)) - 1.0)
    return float(value) if np.ndim(y) == 0 else value


#: ``S(-1)``: a detection on the first row of a window is worth exactly ``A_TP``.
TP_NORMALISER = scaled_sigmoid(-1.0)


def probation_rows(n_rows: int) -> int:
    """Rows ``0..P-1`` are warm-up for the detector and ignored by the scorer."""
    return min(math.floor(PROBATION_SHARE * n_rows), PROBATION_CAP)


def window_rows(timestamps: Sequence, windows: Iterable[Sequence]) -> list[tuple[int, int]]:
    """Each ``[t_start, t_end]`` window -> ``(L, R)``: the first rows whose timestamps equal its ends.

    The rows are matched as they are in the file (repeated timestamps stay repeated): the first match
    wins, as in NAB.
    """
    stamps = pd.to_datetime(pd.Series(list(timestamps))).to_numpy()
    rows = []
    for start, end in windows:
        bounds = []
        for edge in (start, end):
            hits = np.flatnonzero(stamps == np.datetime64(pd.Timestamp(edge)))
            if hits.size == 0:
                raise ValueError(f"window edge {edge} matches no row's timestamp")
            bounds.append(int(hits[0]))
        left, right = bounds
        if right < left:
            raise ValueError(f"window {start} .. {end} ends before it starts (rows {left} .. {right})")
        rows.append((left, right))
    rows.sort()
    for (_, right), (left, _) in zip(rows, rows[1:], strict=False):
        if left <= right:
            raise ValueError("windows overlap; NAB's label files hold disjoint windows")
    return rows


def row_values(n_rows: int, windows: Sequence[tuple[int, int]], profile: Profile) -> tuple[np.ndarray, np.ndarray]:
    """What a detection on each row is worth, and the index of the window holding it (or NOT_IN_WINDOW).

    Inside a window: ``A_TP * S(y) / S(-1)``, ``y = -(R - i + 1) / W``. Outside, before any window has
    ended: ``-A_FP``. Outside, after a window: ``A_FP * S((i - R') / (W' - 1))`` from the most recent
    window that ended before the row.
    """
    values = np.full(n_rows, -profile.a_fp)
    window_of_row = np.full(n_rows, NOT_IN_WINDOW)
    rows = np.arange(n_rows)
    for number, (left, right) in enumerate(windows):
        width = right - left + 1
        inside = rows[left : right + 1]
        values[inside] = profile.a_tp * scaled_sigmoid(-(right - inside + 1) / width) / TP_NORMALISER
        window_of_row[inside] = number
        following_end = windows[number + 1][0] if number + 1 < len(windows) else n_rows
        after = rows[right + 1 : following_end]
        # A one-row window would divide by zero; NAB's windows are far wider, so treat y as > 3.
        y = (after - right) / (width - 1) if width > 1 else np.full(after.size, np.inf)
        values[after] = profile.a_fp * scaled_sigmoid(y)
    return values, window_of_row


@dataclass(frozen=True)
class LabelledFile:
    """One data file's anomaly scores and its windows as rows."""

    name: str
    scores: np.ndarray
    windows: tuple[tuple[int, int], ...]

    def __post_init__(self):
        scores = np.asarray(self.scores, dtype=float)
        if scores.ndim != 1:
            raise ValueError(f"{self.name}: scores must be one per row")
        if not np.all(np.isfinite(scores)) or scores.min(initial=0) < 0 or scores.max(initial=0) > 1:
            raise ValueError(f"{self.name}: anomaly scores must be finite and in [0, 1]")
        for left, right in self.windows:
            if not 0 <= left <= right < scores.size:
                raise ValueError(f"{self.name}: window rows {left}..{right} are outside 0..{scores.size - 1}")
        object.__setattr__(self, "scores", scores)

    @property
    def probation(self) -> int:
        return probation_rows(self.scores.size)


@dataclass(frozen=True)
class ProfileResult:
    profile: str
    threshold: float
    raw: float
    null: float
    perfect: float
    score: float
    true_positives: int  # windows with a detection
    false_negatives: int  # windows without one
    false_positives: int  # detections outside every window


def normalised_score(raw: float, n_windows: int, profile: Profile) -> float:
    """``100 * (S - S_null) / (S_perfect - S_null)`` with the baselines of the scored set."""
    null, perfect = -profile.a_fn * n_windows, profile.a_tp * n_windows
    if perfect == null:
        raise ValueError("cannot normalise a set of files without any anomaly window")
    return 100.0 * (raw - null) / (perfect - null)


def raw_score(files: Sequence[LabelledFile], profile: Profile, threshold: float) -> float:
    """Corpus raw score at one threshold (section 7): a term per window plus every false positive."""
    total = 0.0
    for file in files:
        values, window_of_row = row_values(file.scores.size, file.windows, profile)
        detected = np.zeros(file.scores.size, dtype=bool)
        detected[file.probation :] = file.scores[file.probation :] >= threshold
        for number in range(len(file.windows)):
            hits = detected & (window_of_row == number)
            total += values[hits].max() if hits.any() else -profile.a_fn
        total += values[detected & (window_of_row == NOT_IN_WINDOW)].sum()
    return float(total)


def sweep(files: Sequence[LabelledFile], profile: Profile) -> ProfileResult:
    """The exhaustive threshold sweep of section 8.1; ties go to the higher threshold.

    Pools the non-probationary rows of every file, walks them by descending score and keeps, per
    window, the best detection so far (the earliest row, as values fall inside a window) and the sum
    of false-positive values. The running total after the last row of each distinct score is S(score).
    """
    scores, values, windows = [], [], []
    n_windows = 0
    for file in files:
        file_values, window_of_row = row_values(file.scores.size, file.windows, profile)
        keep = slice(file.probation, None)
        scores.append(file.scores[keep])
        values.append(file_values[keep])
        windows.append(np.where(window_of_row[keep] == NOT_IN_WINDOW, NOT_IN_WINDOW, window_of_row[keep] + n_windows))
        n_windows += len(file.windows)
    pooled = pd.DataFrame(
        {"score": np.concatenate(scores), "value": np.concatenate(values), "window": np.concatenate(windows)}
    )
    pooled = pooled.sort_values("score", ascending=False, kind="stable").reset_index(drop=True)
    null = -profile.a_fn * n_windows

    in_window = pooled["window"] != NOT_IN_WINDOW
    gain = pooled["value"].where(~in_window, 0.0)
    # A window's term rises only when a row beats its best detection so far (starting from -A_FN).
    best_so_far = pooled["value"].where(in_window).groupby(pooled["window"]).cummax()
    previous_best = best_so_far.groupby(pooled["window"]).shift(1).fillna(-profile.a_fn)
    gain = gain + (best_so_far - previous_best).where(in_window, 0.0)
    totals = null + gain.cumsum().to_numpy()

    last_of_score = np.r_[pooled["score"].to_numpy()[1:] != pooled["score"].to_numpy()[:-1], True]
    candidates = np.r_[NO_DETECTION_THRESHOLD, pooled["score"].to_numpy()[last_of_score]]
    candidate_totals = np.r_[null, totals[last_of_score]]
    best_index = int(np.argmax(candidate_totals))  # first maximum = highest threshold
    threshold = float(candidates[best_index])
    detected_rows = pooled["score"] >= threshold
    detected_windows = pooled.loc[detected_rows & in_window, "window"].nunique()
    return ProfileResult(
        profile=profile.name,
        threshold=threshold,
        raw=float(candidate_totals[best_index]),
        null=null,
        perfect=profile.a_tp * n_windows,
        score=normalised_score(float(candidate_totals[best_index]), n_windows, profile),
        true_positives=int(detected_windows),
        false_negatives=n_windows - int(detected_windows),
        false_positives=int((detected_rows & ~in_window).sum()),
    )


def score_all_profiles(files: Sequence[LabelledFile]) -> dict[str, ProfileResult]:
    return {name: sweep(files, profile) for name, profile in PROFILES.items()}


def load_windows(labels_path: str | Path) -> dict[str, list[list[str]]]:
    """``combined_windows.json``: file path relative to the data directory -> list of windows."""
    return json.loads(Path(labels_path).read_text())
