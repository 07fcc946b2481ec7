"""Unit hints from column names: `distance_m` → `distance_km` is a change of unit, not a rename."""

from __future__ import annotations

# Per quantity: suffix -> size in the quantity's base unit.
UNITS: dict[str, dict[str, float]] = {
    "length": {"mm": 0.001, "cm": 0.01, "m": 1.0, "metres": 1.0, "meters": 1.0, "km": 1000.0, "ft": 0.3048,
               "mi": 1609.344, "miles": 1609.344, "nmi": 1852.0},
    "time": {"us": 1e-6, "ms": 0.001, "s": 1.0, "sec": 1.0, "secs": 1.0, "seconds": 1.0, "min": 60.0,
             "mins": 60.0, "minutes": 60.0, "h": 3600.0, "hr": 3600.0, "hrs": 3600.0, "hours": 3600.0,
             "days": 86400.0},
    "mass": {"mg": 1e-6, "g": 0.001, "kg": 1.0, "t": 1000.0, "lb": 0.45359237},
    "speed": {"kmh": 1.0, "kph": 1.0, "mps": 3.6, "ms": 3.6, "mph": 1.609344, "kn": 1.852, "knots": 1.852},
    "volume": {"ml": 0.001, "l": 1.0, "litres": 1.0, "liters": 1.0, "gal": 3.785411784, "m3": 1000.0},
    "energy": {"wh": 1.0, "kwh": 1000.0, "mwh": 1e6},
}


def split_unit(column: str) -> list[tuple[str, str, str]]:
    """Every (stem, quantity, unit) reading of a column name ending in _<unit>."""
    name = column.lower()
    found = []
    for quantity, units in UNITS.items():
        for unit in units:
            if name.endswith(f"_{unit}") and len(name) > len(unit) + 1:
                found.append((name[: -len(unit) - 1], quantity, unit))
    return found


def unit_change(old: str, new: str) -> str | None:
    """A hint when `old` and `new` name one quantity in two units (distance_m -> distance_km)."""
    for stem_a, quantity_a, unit_a in split_unit(old):
        for stem_b, quantity_b, unit_b in split_unit(new):
            if stem_a == stem_b and quantity_a == quantity_b and unit_a != unit_b:
                units = UNITS[quantity_a]
                if units[unit_a] == units[unit_b]:
                    return f"the same {quantity_a} unit spelled differently ({unit_a} vs {unit_b})"
                factor = units[unit_b] / units[unit_a]
                return f"{quantity_a} in {unit_b} instead of {unit_a} (1 {unit_b} = {factor:g} {unit_a})"
    return None
