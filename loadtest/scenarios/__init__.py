"""The ghz scenario files (`*.json` here), written by `python -m loadtest.scenarios.generate`."""

from pathlib import Path

SCENARIO_DIR = Path(__file__).parent


def scenario_files() -> list[Path]:
    """Every scenario file, by name."""
    return sorted(SCENARIO_DIR.glob("*.json"))
