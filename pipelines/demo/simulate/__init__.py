"""The demo's simulated plan year: :func:`simulate_year` and what it returns.

``spec`` (how each field is answered), ``schedule`` (when: visits and the plan year's
calendar), ``rules`` (the town's table of forms), ``habits`` (slow villages, planted faults and
numbers, edits and reviews) and ``engine`` (running it).
"""

from pipelines.demo.simulate.engine import SimulatedYear, simulate_year

__all__ = ["SimulatedYear", "simulate_year"]
