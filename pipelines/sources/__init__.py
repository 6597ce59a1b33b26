"""Where submissions come from: each source turns one server (:mod:`.central`, :mod:`.kobo`)
or hand-moved export (:mod:`.exports`) into canonical records, behind the
:class:`~pipelines.sources.base.Source` protocol that :mod:`pipelines.sync` reads."""
