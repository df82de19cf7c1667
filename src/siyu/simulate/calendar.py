"""The shopping calendar: a day-by-day intensity with 618, 双11, 年货节 and the monthly 会员日.

Intensity 1.0 is an ordinary weekday. The simulator scales inflow, browsing and (partly) orders by
it, so these peaks are planted in the data and can be found again by analytics.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta

import numpy as np

#: 春节 (Chinese New Year's day) of 2000–2061, a decade a line, as month and day: the day of the
#: new moon (Beijing time) between January 21 and February 20, the second after the winter
#: solstice. 2000–2031 agree with the published dates; later ones come from Meeus's new-moon series.
_SPRING_TABLE = """
2000: 0205 0124 0212 0201 0122 0209 0129 0218 0207 0126
2010: 0214 0203 0123 0210 0131 0219 0208 0128 0216 0205
2020: 0125 0212 0201 0122 0210 0129 0217 0206 0126 0213
2030: 0203 0123 0211 0131 0219 0208 0128 0215 0204 0124
2040: 0212 0201 0122 0210 0130 0217 0206 0126 0214 0202
2050: 0123 0211 0201 0219 0208 0128 0215 0204 0124 0212
2060: 0202 0121
"""
SPRING_FESTIVAL = {
    int(decade[:-1]) + i: date(int(decade[:-1]) + i, int(md[:2]), int(md[2:]))
    for decade, *days in (line.split() for line in _SPRING_TABLE.strip().splitlines())
    for i, md in enumerate(days)
}

#: The dates the calendar knows: 年货节 before a late-December day needs the next year's 春节.
FIRST_DAY = date(min(SPRING_FESTIVAL), 1, 1)
LAST_DAY = date(max(SPRING_FESTIVAL) - 1, 12, 31)

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
        return self.start + timedelta(days=int(index))


class OutsideCalendar(ValueError):
    """A date the shopping calendar has no 春节 for."""


def check_period(first: date, last: date) -> None:
    """Refuse a period (inclusive local dates) outside :data:`FIRST_DAY` … :data:`LAST_DAY`."""
    if first < FIRST_DAY or last > LAST_DAY:
        raise OutsideCalendar(
            f"the simulated period {first} – {last} leaves the shopping calendar ({FIRST_DAY} – {LAST_DAY}): "
            "its 春节 and 年货节 dates are known for those years only: choose an end date and months inside it"
        )


def day_intensity(day: date, member_day: int) -> tuple[float, str]:
    """The intensity of one local date and the name of the campaign it falls in.

    Raises :class:`OutsideCalendar` for a date outside :data:`FIRST_DAY` … :data:`LAST_DAY`.
    """
    check_period(day, day)
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
        # This year's 春节 for January–February days, next year's for late December ones.
        for cny in (SPRING_FESTIVAL[day.year], SPRING_FESTIVAL[day.year + 1]):
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
    """The calendar of ``days`` local dates from ``start`` (:class:`OutsideCalendar` beyond its years)."""
    check_period(start, start + timedelta(days=max(days, 1) - 1))
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
