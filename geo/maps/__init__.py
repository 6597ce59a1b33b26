"""Offline, China-ready folium maps: an overview and one map per domain, each a single HTML file
that opens with no network (see :func:`draw_maps`).

- :mod:`geo.maps.draw`: the input frames, and one page per map;
- :mod:`geo.maps.layers`: villages by completion, roads, clustered findings, the legend;
- :mod:`geo.maps._assets`: Leaflet inlined, and the guard against any online asset.
"""

from geo.maps.draw import DOMAINS, MapsResult, draw_maps

__all__ = ["DOMAINS", "MapsResult", "draw_maps"]
