"""The shopping calendar: a day-by-day intensity with 618, 双11, 年货节 and the monthly 会员日.

Intensity 1.0 is an ordinary weekday. The simulator scales inflow, browsing and (partly) orders by
it, so these peaks are planted in the data and can be found again by analytics.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta

import numpy as np

#: 春节 (Chinese New Year's day); 年货节 runs in the weeks before it.
SPRING_FESTIVAL = {
    2019: date(2019, 2, 5),
    2020: date(2020, 1, 25),
    2021: date(2021, 2, 12),
    2022: date(2022, 2, 1),
    2023: date(2023, 1, 22),
    2024: date(2024, 2, 10),
    2025: date(2025, 1, 29),
    2026: date(2026, 2, 17),
    2027: date(2027, 2, 6),
    2028: date(2028, 1, 26),
    2029: date(2029, 2, 13),
    2030: date(2030, 2, 3),
    2031: date(2031, 1, 23),
}

#: Peak days and their multipliers, for the ground truth and the tests.
PEAKS = {"618": 3.0, "双11": 4.0, "年货节": 1.6, "会员日": 2.0}


@dataclass(frozen=True)
class Calendar:
    """Daily intensities for the simulated period ``[start, start + len(days))`` (local dates)."""

    start: date
    intensity: np.ndarray  # float64, one value per day
    labels: tuple[str, ...]  # the campaign a day belongs to ("" for none)

    @property
    def days(self) -> int:
        """Number of days in the period."""
        return len(self.intensity)

    def campaigns(self) -> list[tuple[str, int, int]]:
        """The 618, 双11 and 年货节 runs inside the period: (name, first day, day after the last)."""
        runs: list[tuple[str, int, int]] = []
        for i, label in enumerate(self.labels):
            if label not in ("618", "双11", "年货节"):
                continue
            if runs and runs[-1][0] == label and runs[-1][2] == i:
                runs[-1] = (label, runs[-1][1], i + 1)
            else:
                runs.append((label, i, i + 1))
        return runs

    def day_of(self, index: int) -> date:
        """The local date of day ``index``."""
        return self.start + timedelta(days=index)


def _festival(year: int) -> date | None:
    return SPRING_FESTIVAL.get(year)


def day_intensity(day: date, member_day: int) -> tuple[float, str]:
    """The intensity of one local date and the name of the campaign it falls in."""
    factor, label = 1.0, ""
    if day.weekday() >= 5:
        factor *= 1.15
    md = (day.month, day.day)
    if (6, 1) <= md <= (6, 18):  # 618 runs up from June 1st to the 18th
        factor *= PEAKS["618"] if md == (6, 18) else 1.4
        label = "618"
    elif (10, 24) <= md <= (11, 11):  # 双11 pre-sales from late October, the peak on 11.11
        factor *= PEAKS["双11"] if md == (11, 11) else 1.5
        label = "双11"
    else:
        cny = _festival(day.year) or _festival(day.year + 1)
        if cny is not None:
            gap = (cny - day).days
            if 5 <= gap <= 25:
                factor *= PEAKS["年货节"]
                label = "年货节"
            elif -6 <= gap <= 4:  # the holiday itself: couriers stop, shops close
                factor *= 0.6
                label = "春节"
    if day.day == member_day and not label:
        factor *= PEAKS["会员日"]
        label = "会员日"
    return factor, label


def build_calendar(start: date, days: int, member_day: int) -> Calendar:
    """The calendar of ``days`` local dates from ``start``."""
    values, labels = [], []
    for i in range(days):
        f, label = day_intensity(start + timedelta(days=i), member_day)
        values.append(f)
        labels.append(label)
    return Calendar(start, np.asarray(values, dtype=np.float64), tuple(labels))


#: Share of activity in each local hour: quiet at night, peaks mid-morning, after lunch and evening.
_MORNING = [0.6, 0.3, 0.15, 0.1, 0.1, 0.2, 0.8, 2.0, 3.5, 4.5, 5.5, 5.0]  # 00:00–11:59
_AFTERNOON = [4.5, 5.0, 5.5, 5.0, 4.5, 4.5, 5.0, 6.0, 7.0, 7.5, 6.0, 3.0]  # 12:00–23:59
HOUR_WEIGHTS = np.array(_MORNING + _AFTERNOON)
HOUR_WEIGHTS = HOUR_WEIGHTS / HOUR_WEIGHTS.sum()
