"""Which road form answers about which kind of road segment (a fact of the forms).

Each field's choice list must name exactly the town plan's segments of that kind, plus
:data:`OTHER` (a road the plan does not name). The plan declares the segments
(``[[segment]]``); the form build checks the lists against them.
"""

from __future__ import annotations

SEGMENT_FIELDS = {"construction": ("road_progress", "segment"), "lighting": ("street_lighting", "road")}  # fmt: skip
OTHER = "other"
