"""Print the telemetry level NeMo Evaluator itself resolves (env > config file > 2),
as a bare number on stdout; upstream's warnings go to stderr.

Usage: python level.py
"""

from nemo_evaluator.telemetry import get_telemetry_level

print(int(get_telemetry_level().value))
