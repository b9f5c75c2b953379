"""Document numbers: per series (``INV-2026``, ``STM-2026``, ``CN-2026``, ``RCP-2026``), unique
and gapless. Each series is a ``NumberSeries`` counter row locked in the transaction that
writes the documents: a rollback rolls the counter back too, so no number is skipped (a
sequence would skip). Lock it last, after the company rows and their books: the documents'
lock order."""

from .models import NumberSeries


def format_number(series: str, value: int) -> str:
    return f"{series}-{value:06d}"


def numbers_take(series_of_each: list[str], names: set[str]) -> list[tuple[str, str]]:
    """The next numbers of each series, in order, from counter rows locked until commit."""
    NumberSeries.objects.bulk_create(
        [NumberSeries(name=name) for name in sorted(names)], ignore_conflicts=True
    )
    counters = {
        series.name: series
        for series in NumberSeries.objects.select_for_update()
        .filter(name__in=sorted(names))
        .order_by("name")
    }
    taken = []
    for name in series_of_each:
        counter = counters[name]
        taken.append((name, format_number(name, counter.next_value)))
        counter.next_value += 1
    NumberSeries.objects.bulk_update(list(counters.values()), ["next_value"])
    return taken
