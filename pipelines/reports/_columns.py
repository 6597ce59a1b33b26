"""Which columns of each form table the report reads (issue 13: read only what the steps need).

:func:`pipelines.reports._inputs.load_inputs` reads each form's table with ``columns=`` (see
:func:`pipelines.tables.read_form`); :func:`needed_columns` says which, from the plan and the
forms' schemas by the rules each consumer of ``Inputs.forms`` follows, so a town's own forms and
plan work without a list of field names:

- every step: the record's ``instance_id``, ``submitted_at``, ``review_state`` and
  ``form_version`` (``_unknown_versions``), and ``village`` (indicators, checks, follow-ups and
  maps place rows in a village by that name);
- the indicators and the dispatch's workload: each indicator's :attr:`Indicator.fields_used`
  (the plan is checked against these: a missing one is still missing, and still an error);
- the checks (:mod:`pipelines.analysis.checks`): every geopoint's ``_lon``/``_lat``/``_accuracy``,
  every date, every roster (``select_one_from_file``) and village field, and the fields of
  :data:`DUPLICATE_KEYS` and :data:`OVERDUE_RULES`;
- the follow-ups (:mod:`pipelines.analysis.followups`): their builders pick content by name
  (notes, conclusions, places), so a form they build items from keeps every question;
- the maps (:mod:`pipelines.reports._map_frames`): the road and lighting reports;
- the portal: ``submitted_at`` (covered above).

Repeats are always read whole (``read_form`` does). A form missing from the answer is read
whole: the rectification form, whose sender may sit in columns no schema names
(``followups._SUBMITTER``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from forms.schema import Field, FormSchema
from pipelines.analysis.checks import DUPLICATE_KEYS, OVERDUE_RULES
from pipelines.analysis.followups import RECTIFICATION, SOURCE_FORMS
from pipelines.analysis.plan import Plan
from pipelines.analysis.tidy import RECORD_COLUMNS, merge_schemas

# What every step may read of any form (tidy's record columns but updated_at, which none reads).
METADATA = ("instance_id", "submitted_at", "review_state", "form_version", "village")

# Forms read whole (see the module docstring).
READ_WHOLE = frozenset({RECTIFICATION})

# The form columns the maps' road layer reads by name (pipelines/reports/_map_frames.py),
# whatever the plan says: kept whatever the plan says.
MAP_COLUMNS: dict[str, tuple[str, ...]] = {
    "road_progress": ("segment", "km_done", "report_date"),
    "street_lighting": (
        "road", "road_other", "section", "inspect_date", "lamps_working", "lamps_installed",
    ),
}  # fmt: skip


_POINT = ("_lon", "_lat", "_accuracy")


def needed_columns(
    plan: Plan, schemas_by_form: Mapping[str, FormSchema | Sequence[FormSchema]]
) -> dict[str, list[str]]:
    """For each form of ``schemas_by_form`` (one schema or every known version of it), the form
    table's columns any step of the report reads, in a stable order. Names a form table lacks
    are harmless (``read_form`` keeps those it has); forms in :data:`READ_WHOLE` are left out
    (read them whole)."""
    followup_forms = SOURCE_FORMS
    out: dict[str, list[str]] = {}
    for form_id, given in sorted(schemas_by_form.items()):
        if form_id in READ_WHOLE:
            continue
        schema = given if isinstance(given, FormSchema) else merge_schemas(list(given))
        fields = [f for f in schema.fields if f.repeat is None]
        names: list[str] = [*METADATA]
        names += _plan_fields(plan, form_id)
        names += _checked(form_id, fields)
        if form_id in followup_forms:
            names += [c for f in fields if not f.meta for c in _field_columns(f)]
        names += MAP_COLUMNS.get(form_id, ())
        out[form_id] = _in_table_order(names, fields)
    return out


def _in_table_order(names: list[str], fields: list[Field]) -> list[str]:
    """``names`` once each, in the order of tidy's form table (the record's columns, then the
    fields'), which ``read_form`` keeps: a step's frames then have the columns they always had."""
    order = [*RECORD_COLUMNS, *(c for f in fields for c in _field_columns(f))]
    rank = {c: i for i, c in reversed(list(enumerate(order)))}
    unique = list(dict.fromkeys(names))
    return sorted(unique, key=lambda c: rank.get(c, len(rank)))


def _plan_fields(plan: Plan, form_id: str) -> list[str]:
    used: set[str] = set()
    for ind in plan.indicators:
        if ind.form == form_id:
            used |= ind.fields_used - {"as_of"}
    return sorted(used)


def _checked(form_id: str, fields: Iterable[Field]) -> list[str]:
    """What :func:`pipelines.analysis.checks.check_forms` reads of the form table."""
    names: list[str] = []
    for f in fields:
        if f.type == "geopoint":
            names += [f"{n}{s}" for n in (f.name, f.path) for s in _POINT]
        elif (f.type == "date" and not f.meta) or f.from_file or "village" in (f.name, f.list_name):
            names += [f.name, f.path]
    if form_id in DUPLICATE_KEYS:
        subject, day = DUPLICATE_KEYS[form_id]
        names += [*subject, day]
    for rule in OVERDUE_RULES:
        if rule.form == form_id:  # a repeat's rule joins the parent's date on
            names += [rule.date] if rule.repeat else [rule.status, rule.deadline, rule.date, rule.kind]  # fmt: skip
    return names


def _field_columns(f: Field) -> list[str]:
    """Every column tidy may make of a form-table field (by name, or by path when two fields
    share a name)."""
    bases = list(dict.fromkeys([f.name, f.path]))
    if f.type == "geopoint":
        return [f"{b}{s}" for b in bases for s in ("_lon", "_lat", "_altitude", "_accuracy")]
    cols = list(bases)
    if f.type == "select_multiple" and f.choices:
        cols += [f"{b}/{c}" for b in bases for c in f.choices]
    return cols
