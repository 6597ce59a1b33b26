"""The ``manyi`` command line. Thin: each command resolves settings and calls a plain function.

A :class:`~pipelines.errors.ManyiError` becomes one line on stderr and a non-zero exit.
"""

from __future__ import annotations

import os
import sys
import tempfile
import traceback
from datetime import date, datetime
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text
from typer.exceptions import TyperException

from pipelines.config import SHANGHAI, Settings, load_settings
from pipelines.errors import ConfigError, FormError, ManyiError

app = typer.Typer(
    help="满意 manyi: field checks for the town's public-satisfaction plan.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
forms_app = typer.Typer(
    help="XLSForms: build, validate and list the field-check forms.", no_args_is_help=True
)
app.add_typer(forms_app, name="forms")
quarantine_app = typer.Typer(
    help="Records kept aside because they could not be read (隔离记录).", no_args_is_help=True
)
app.add_typer(quarantine_app, name="quarantine")
users_app = typer.Typer(
    help="People who collect (采集人员): roles, villages and their collection links.",
    no_args_is_help=True,
)
app.add_typer(users_app, name="users")
tables_app = typer.Typer(
    help="Columnar analytic tables (分析表) under data_dir/tables: kept up to date by pull and report.",
    no_args_is_help=True,
)
app.add_typer(tables_app, name="tables")

out = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)

DataDir = Annotated[
    Path | None,
    typer.Option(
        "--data-dir",
        help="Folder for all mutable state (store, attachments, caches). Env: MANYI_DATA_DIR.",
    ),
]
Config = Annotated[
    Path | None,
    typer.Option("--config", help="Path to manyi.toml. Env: MANYI_CONFIG.", exists=False),
]


def _settings(ctx: typer.Context, **options: object) -> Settings:
    base = ctx.obj or {}
    return load_settings({**base.get("options", {}), **options}, config_file=base.get("config"))


@app.callback()
def _root(ctx: typer.Context, data_dir: DataDir = None, config: Config = None) -> None:
    ctx.obj = {"options": {"data_dir": data_dir}, "config": config}
    _RUN["data_dir"] = data_dir


@forms_app.command("build")
def forms_build(
    ctx: typer.Context,
    out_dir: Annotated[
        Path | None, typer.Option("--out", help="Output folder (default build/forms/).")
    ] = None,
    form: Annotated[
        list[str] | None, typer.Option("--form", help="Build only this form id (repeatable).")
    ] = None,
    no_validate: Annotated[
        bool, typer.Option("--no-validate", help="Skip ODK Validate (Java).")
    ] = False,
) -> None:
    """Compile every XLSForm with pyxform, run ODK Validate, write XForms, attachments and manifest.json."""
    from forms.build import build_forms
    from pipelines.analysis.plan import load_plan

    s = _settings(ctx, build_dir=out_dir)
    with err.status("building forms…") as status:
        report = build_forms(
            s.forms_dir, s.build_dir, s.villages, plan=load_plan(s.plan), only=form, validate=not no_validate,
            on_form=lambda f: status.update(f"building {f}…"),
        )  # fmt: skip
    for w in report.warnings:
        err.print(f"warning: {w}", style="yellow", markup=False, highlight=False)
    for b in report.built:
        out.print(
            f"built {b.form_id} {b.version} {b.title} ({b.questions} questions)", highlight=False
        )
    checked = "ODK Validate passed" if report.validated else "ODK Validate SKIPPED"
    out.print(
        f"{len(report.built)} form(s) written to {report.out_dir} — {checked}", highlight=False
    )
    if report.problems:
        raise FormError(report.problems)


@forms_app.command("list")
def forms_list(ctx: typer.Context) -> None:
    """Print id, version, Chinese title and question count of each form."""
    from forms.build import list_forms

    s = _settings(ctx)
    table = Table("form_id", "version", "title (zh)", "questions")
    for f in list_forms(s.forms_dir):
        table.add_row(*(Text(x) for x in (f.form_id, f.version, f.title, str(f.questions))))
    out.print(table)


@forms_app.command("publish")
def forms_publish(
    ctx: typer.Context,
    to: Annotated[str, typer.Option("--to", help="central or kobo.")],
    form: Annotated[
        list[str] | None, typer.Option("--form", help="Publish only this form id (repeatable).")
    ] = None,
    build_dir: Annotated[
        Path | None, typer.Option("--build-dir", help="Built forms (default build/forms/).")
    ] = None,
) -> None:
    """Create or update each built form (and its roster attachments) on ODK Central or KoboToolbox."""
    from pipelines.publish import publish

    s = _settings(ctx, build_dir=build_dir)
    with err.status(f"publishing to {to}…"):
        report = publish(s, to, form, s.build_dir)
    for label, ids in (
        ("created", report.created),
        ("updated", report.updated),
        ("skipped (unchanged)", report.skipped),
    ):
        out.print(f"{label}: {', '.join(ids) if ids else '-'}", markup=False, highlight=False)


@forms_app.command("sync-villages")
def forms_sync_villages(ctx: typer.Context) -> None:
    """Rewrite each form's village choice list from the village register."""
    from forms.build import sync_villages

    s = _settings(ctx)
    changed = sync_villages(s.forms_dir, s.villages)
    for p in changed:
        out.print(f"updated {p}", highlight=False)
    out.print(f"{len(changed)} form(s) updated from {s.villages}", highlight=False)


class _PullBars:
    """Progress on stderr: one bar per step, and one per form pulled."""

    def __init__(self) -> None:
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

        columns = (
            TextColumn("{task.description}"),
            BarColumn(),
            TextColumn("{task.fields[stats]}"),
            TimeElapsedColumn(),
        )
        self.bars = Progress(*columns, console=err)
        self.tasks: dict[str, int] = {}

    def __enter__(self) -> _PullBars:
        self.bars.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.bars.__exit__(*exc)

    def step(self, text: str) -> None:
        for task in self.tasks.values():
            self.bars.update(task, total=1, completed=1)
        self.tasks[text] = self.bars.add_task(text, total=None, stats="")

    def retry(self, notice) -> None:
        """Say that a request is being retried, so a slow or dead server is not a silent wait."""
        err.print(
            f"第 {notice.attempt} 次重试… {notice.url}: {notice.problem}; retrying in "
            f"{notice.wait_s:.1f} s ({notice.elapsed_s:.0f} s of {notice.give_up_s:.0f} s, "
            "http_give_up_s)",
            style="yellow", markup=False, highlight=False,
        )  # fmt: skip

    def form(self, p) -> None:
        key = f"  {p.form_id}"
        if key not in self.tasks:
            self.tasks[key] = self.bars.add_task(key, total=None, stats="")
        stats = f"{p.pages} page(s), {p.rows} row(s), {p.attachments} attachment(s)"
        self.bars.update(
            self.tasks[key], stats=stats, total=1 if p.done else None, completed=1 if p.done else 0
        )


@app.command("pull")
def pull(
    ctx: typer.Context,
    source: Annotated[
        str | None, typer.Option("--source", help="central, kobo or files. Env: MANYI_SOURCE.")
    ] = None,
    form: Annotated[
        list[str] | None, typer.Option("--form", help="Pull only this form id (repeatable).")
    ] = None,
    path: Annotated[
        Path | None,
        typer.Option(
            "--path", help="For --source files: an export .zip/.xlsx or a Collect instances folder."
        ),
    ] = None,
) -> None:
    """Pull new, edited and deleted submissions (and their photos) into the local store."""
    from pipelines.sync import pull as run_pull

    s = _settings(ctx, source=source)
    with _PullBars() as bars:
        report = run_pull(s, s.source, form, path, bars.form, on_retry=bars.retry)
    table = Table(
        "form",
        "new",
        "updated",
        "deleted",
        "quarantined",
        "attachments",
        "seconds",
        title=f"manyi pull ({report.source})",
    )
    for f in report.forms:
        cells = (
            f.form_id,
            f.new,
            f.updated,
            f.deleted,
            f.quarantined,
            f.attachments,
            f"{f.seconds:.1f}",
        )
        table.add_row(*(Text(str(c)) for c in cells), style="red" if f.error else None)
    table.add_row(*(Text(str(c)) for c in ("total", report.new, report.updated, report.deleted,
                                            report.quarantined, report.attachments, f"{report.seconds:.1f}")), style="bold")  # fmt: skip
    out.print(table)
    _print_pull_notes(report)
    if report.errors:
        raise typer.Exit(1)


def _print_pull_notes(report) -> None:
    """Warnings, then each record quarantined by this pull with its reason, then errors."""
    for f in report.forms:
        for w in f.warnings:
            err.print(
                f"warning: {f.form_id}: {_line(w)}", style="yellow", markup=False, highlight=False
            )
        for q in f.quarantined_items:
            err.print(
                f"quarantined: {q.form_id} {q.item_key()}: {_line(q.reason)}",
                style="yellow", markup=False, highlight=False,
            )  # fmt: skip
    if report.quarantined:
        err.print(
            f"{report.quarantined} record(s) quarantined, nothing lost: fix them at the source and "
            "pull again; `manyi quarantine list` shows them later",
            markup=False, highlight=False,
        )  # fmt: skip
    for e in report.errors:
        err.print(f"error: {_line(e)}", markup=False, highlight=False)


@quarantine_app.command("list")
def quarantine_list(
    ctx: typer.Context,
    form: Annotated[str | None, typer.Option("--form", help="Only this form id.")] = None,
) -> None:
    """List the records kept aside because they could not be read, with the reason for each."""
    from pipelines.store import open_store, store_exists

    s = _settings(ctx)
    if not store_exists(s):
        out.print("0 record(s) in quarantine (no store yet)", highlight=False)
        return
    with open_store(s, read_only=True) as store:
        items = store.quarantine(form_id=form)
    for q in items:  # one line each: long reasons stay whole and greppable
        out.print(
            f"{q.form_id} {q.key} ({q.source}, first seen {_shanghai(q.first_seen_at)} 北京时间, "
            f"tried {q.tries}×): {_line(q.reason)}",
            markup=False, highlight=False, soft_wrap=True,
        )  # fmt: skip
    out.print(f"{len(items)} record(s) in quarantine", highlight=False)


@tables_app.command("rebuild")
def tables_rebuild(ctx: typer.Context) -> None:
    """Throw the analytic tables away and build them again from the store (the store is the
    record; the tables are a copy the report reads)."""
    from pipelines.store import open_store, store_exists
    from pipelines.tables import rebuild_all

    s = _settings(ctx)
    if not store_exists(s):
        out.print("还没有数据库（no store yet）：先运行 manyi pull", highlight=False)
        return
    with open_store(s, read_only=True) as store:
        done = rebuild_all(s, store)
    for form_id in done.rebuilt:
        out.print(
            f"{form_id}: {done.changed.get(form_id, 0):,} 条提交已重建（rebuilt）", highlight=False
        )
    for form_id in done.unbuilt:
        err.print(
            f"{form_id}: 未构建该表单，分析表未建（not built: run manyi forms build）",
            highlight=False,
        )
    out.print(
        f"分析表已重建：{len(done.rebuilt)} 个表单（tables rebuilt for {len(done.rebuilt)} form(s)）",
        highlight=False,
    )


def _shanghai(utc: str | None) -> str:
    if not utc:
        return ""
    moment = datetime.fromisoformat(utc.replace("Z", "+00:00"))
    return moment.astimezone(SHANGHAI).strftime("%Y-%m-%d %H:%M")


def _as_of(value: str | None) -> date:
    if value is None:
        return datetime.now(SHANGHAI).date()
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise ConfigError(
            f"--as-of {value!r} is not a date; write it as YYYY-MM-DD, e.g. 2023-10-15"
        ) from None


@app.command("report")
def report(
    ctx: typer.Context,
    as_of: Annotated[
        str | None,
        typer.Option("--as-of", help="Report date YYYY-MM-DD (default: today in Asia/Shanghai)."),
    ] = None,
    out_dir: Annotated[
        Path | None, typer.Option("--out", help="Outputs folder (default outputs/).")
    ] = None,
) -> None:
    """Progress, data checks, follow-up lists, the dispatch report (public + internal) and the maps."""
    from pipelines.reports import refresh_outputs

    s = _settings(ctx, outputs_dir=out_dir)
    day = _as_of(as_of)
    with err.status(f"writing the report for {day}…"):
        result = refresh_outputs(s, day, s.outputs_dir)
    for w in result.warnings:
        err.print(f"warning: {w}", style="yellow", markup=False, highlight=False)
    for key, path in result.files.items():
        out.print(f"{key}: {path}", markup=False, highlight=False)
    note = " (no submissions yet: figures say 暂无数据)" if result.empty else ""
    out.print(
        f"{result.submissions} submission(s){note}; open {result.index}",
        markup=False,
        highlight=False,
    )


@app.command("demo")
def demo(
    ctx: typer.Context,
    as_of: Annotated[
        str | None,
        typer.Option(
            "--as-of", help="Simulate up to this date YYYY-MM-DD (default: 10-15 of the plan year)."
        ),
    ] = None,
    out_dir: Annotated[
        Path | None, typer.Option("--out", help="Outputs folder (default outputs/).")
    ] = None,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the simulated year.")] = 0,
) -> None:
    """Build the forms, simulate a plan year, serve it as ODK Central, pull it and write every output."""
    from pipelines.demo.run import run_demo

    s = _settings(ctx, outputs_dir=out_dir)
    day = _as_of(as_of) if as_of else None
    with _PullBars() as bars:
        result = run_demo(s, day, s.outputs_dir, seed=seed, on_step=bars.step, on_pull=bars.form)
        bars.step("done")
    p = result.pull
    out.print(
        f"{result.forms} forms built; {result.simulated} simulated submissions served as ODK Central; "
        f"pulled {p.new} new, {p.attachments} photos, {p.quarantined} quarantined; report as of {result.as_of}.",
        markup=False, highlight=False,
    )  # fmt: skip
    out.print(f"Open {result.index.resolve()}", markup=False, highlight=False)
    _print_portal(result)


def _print_portal(result) -> None:
    """How to see the demo in the portal: the serve command and the demo logins."""
    s = result.settings
    if s is None or not result.people:
        return
    out.print(
        "\nThe portal on the demo data (each person sees their scope; phones on the same network "
        "use --host 0.0.0.0):",
        markup=False, highlight=False,
    )  # fmt: skip
    out.print(
        f"  .venv/bin/manyi --data-dir {s.data_dir} serve --as-of {result.as_of}"
        "   then open http://127.0.0.1:8000/login",
        markup=False, highlight=False,
    )  # fmt: skip
    for p in result.people:
        out.print(
            f"  {p.role}（{p.scope}）: login {p.login}  password {p.password}",
            markup=False, highlight=False,
        )  # fmt: skip


def _people_store(s: Settings):
    from pipelines.store import open_store

    return open_store(s)


def _base_url(s: Settings, host: str = "127.0.0.1", port: int = 8000) -> str:
    return s.public_url or f"http://{host}:{port}"


def _print_link(s: Settings, issued, qr: Path | None) -> None:
    from pipelines.server.people import collection_link, write_qr

    link = collection_link(_base_url(s), issued.token)
    out.print(f"{issued.person.login} {issued.person.name}: {link}", markup=False, highlight=False)
    out.print(
        "填入 ODK Collect 的服务器地址，或在手机浏览器（微信）中打开；链接即凭证，请勿转发。"
        + ("" if s.public_url else " (set public_url to the address phones reach)"),
        markup=False, highlight=False,
    )  # fmt: skip
    if qr is not None:
        out.print(f"QR code: {write_qr(link, qr)}", markup=False, highlight=False)


@users_app.command("add")
def users_add(
    ctx: typer.Context,
    login: Annotated[str, typer.Argument(help="Login, e.g. zhang.san (lower-case).")],
    name: Annotated[str, typer.Option("--name", help="姓名, as colleagues know the person.")],
    role: Annotated[
        str,
        typer.Option(
            "--role", help="town, group, village, teacher, doctor, police, … (roles.toml)."
        ),
    ],
    village: Annotated[
        list[str] | None, typer.Option("--village", help="12-digit village code (repeatable).")
    ] = None,
    group: Annotated[
        list[int] | None, typer.Option("--group", help="Liaison group number, 第N组 (repeatable).")
    ] = None,
    form: Annotated[
        list[str] | None, typer.Option("--form", help="A form beyond the role's (repeatable).")
    ] = None,
    qr: Annotated[
        Path | None, typer.Option("--qr", help="Also write the link as a QR code PNG.")
    ] = None,
) -> None:
    """Add a person and print their collection link (the server URL for ODK Collect or a browser)."""
    from geo.villages import load_villages
    from pipelines.publish.manifest import built_forms
    from pipelines.server.people import add_person, load_roles

    s = _settings(ctx)
    try:
        known_forms = [f["form_id"] for f in built_forms(s.build_dir)]
    except ManyiError:
        known_forms = []  # not built yet: the forms are checked when they are served
    with _people_store(s) as store:
        issued = add_person(
            store, login, name, role, roles=load_roles(s.roles), villages=village or (),
            groups=group or (), forms=form or (),
            known_villages=[v.code for v in load_villages(s.villages)], known_forms=known_forms,
        )  # fmt: skip
    _print_link(s, issued, qr)


@users_app.command("list")
def users_list(ctx: typer.Context) -> None:
    """List the people: login, name, role, villages, groups, forms and whether enabled."""
    from pipelines.server.people import list_people, load_roles

    s = _settings(ctx)
    roles = load_roles(s.roles)
    with _people_store(s) as store:
        people = list_people(store)
    for p in people:
        state = "停用 disabled" if p.disabled else "启用"
        out.print(
            f"{p.login} {p.name} {p.role} villages={','.join(p.villages) or '-'} "
            f"groups={','.join(map(str, p.groups)) or '-'} forms={','.join(p.forms(roles)) or '-'} {state}",
            markup=False, highlight=False, soft_wrap=True,
        )  # fmt: skip
    out.print(f"{len(people)} person(s)", highlight=False)


@users_app.command("token")
def users_token(
    ctx: typer.Context,
    login: Annotated[str, typer.Argument(help="The person's login.")],
    rotate: Annotated[
        bool, typer.Option("--rotate", help="Issue a new link; the old one stops working.")
    ] = False,
    qr: Annotated[
        Path | None, typer.Option("--qr", help="Also write the link as a QR code PNG.")
    ] = None,
) -> None:
    """Issue a new collection link (the old token is never stored, so it cannot be shown again)."""
    from pipelines.server.people import rotate_token

    if not rotate:
        raise ConfigError(
            f"the link of {login!r} cannot be shown again (only its hash is kept); "
            f"run `manyi users token {login} --rotate` for a new one"
        )
    s = _settings(ctx)
    with _people_store(s) as store:
        issued = rotate_token(store, login)
    _print_link(s, issued, qr)


@users_app.command("disable")
def users_disable(
    ctx: typer.Context, login: Annotated[str, typer.Argument(help="The person's login.")]
) -> None:
    """Disable a person: their link stops working at once."""
    from pipelines.server.people import disable_person

    s = _settings(ctx)
    with _people_store(s) as store:
        person = disable_person(store, login)
    out.print(
        f"{person.login} {person.name}: disabled; their link no longer works",
        markup=False,
        highlight=False,
    )


@users_app.command("password")
def users_password(
    ctx: typer.Context, login: Annotated[str, typer.Argument(help="The person's login.")]
) -> None:
    """Set a person's portal password (read from stdin, or asked twice); ends their sessions."""
    from pipelines.errors import DataError
    from pipelines.server.auth import set_password

    if sys.stdin.isatty():
        password = typer.prompt(
            f"新密码 new password for {login}", hide_input=True, confirmation_prompt=True
        )
    else:  # a pipe: the first line, as bytes, so a wrong encoding is one clear line
        raw = sys.stdin.buffer.readline(8192).rstrip(b"\r\n")
        try:
            password = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise DataError(
                f"password for {login!r} on stdin is not UTF-8; send it as UTF-8 text"
            ) from None
    s = _settings(ctx)
    with _people_store(s) as store:
        person = set_password(store, login, password)
    out.print(
        f"{person.login} {person.name}: password set; their open sessions are ended",
        markup=False,
        highlight=False,
    )


@app.command("maps")
def maps(
    ctx: typer.Context,
    out_dir: Annotated[
        Path | None, typer.Option("--out", help="Output folder (default outputs/).")
    ] = None,
    basemap: Annotated[
        str | None,
        typer.Option("--basemap", help="none, tianditu, amap or osm. Env: MANYI_BASEMAP."),
    ] = None,
    boundaries: Annotated[
        Path | None,
        typer.Option(
            "--boundaries",
            help="Village boundaries (GeoPackage, Shapefile, GeoJSON). Env: MANYI_BOUNDARIES.",
        ),
    ] = None,
) -> None:
    """Draw the overview map and one map per domain, offline, with an index page."""
    from geo.maps import draw_maps
    from pipelines.analysis.plan import load_plan
    from pipelines.reports.index import write_index

    s = _settings(ctx, outputs_dir=out_dir, basemap=basemap, boundaries=boundaries)
    with err.status("drawing maps…"):
        result = draw_maps(s, s.outputs_dir, segments=load_plan(s.plan).segments)
        index = write_index(s.outputs_dir, title=f"{s.town} 满意度提升工程")
    for w in result.warnings:
        err.print(f"warning: {w}", style="yellow", markup=False, highlight=False)
    out.print(f"{len(result.maps)} map(s) written; open {index}", highlight=False)


@app.command("serve")
def serve(
    ctx: typer.Context,
    host: Annotated[
        str, typer.Option("--host", help="Address to listen on (0.0.0.0: every network).")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", help="Port to listen on.")] = 8000,
    as_of: Annotated[
        str | None,
        typer.Option(
            "--as-of",
            help="The portal's report date YYYY-MM-DD (default: today, within the plan year).",
        ),
    ] = None,
    workers: Annotated[
        int,
        typer.Option(
            "--workers",
            help="Server processes (more than 1 needs a PostgreSQL store_url).",
        ),
    ] = 1,
) -> None:
    """Receive forms from phones (OpenRosa, Web Forms) and serve the portal at /login."""
    from pipelines.server.app import serve as run

    s = _settings(ctx)
    day = _as_of(as_of) if as_of else None
    out.print(
        f"manyi serve: portal http://{host}:{port}/login, phones http://{host}:{port}/key/<token> "
        "(Ctrl-C stops)",
        markup=False, highlight=False,
    )  # fmt: skip
    run(s, host=host, port=port, as_of=day, workers=workers)


def _line(text: object) -> str:
    """One line for the terminal, with every credential removed."""
    return _scrub(" ".join(str(text).split()))


def _scrub(text: str) -> str:
    from pipelines.errors import scrub

    secrets = tuple(os.environ.get(name, "") for name in _SECRET_ENV)
    return scrub(text, secrets)


# What this run was told, for the crash log's folder (set before any command runs).
_RUN: dict[str, Path | None] = {}

# Environment variables whose values never reach the terminal or a crash log.
_SECRET_ENV = (
    "MANYI_CENTRAL_PASSWORD",
    "MANYI_KOBO_TOKEN",
    "MANYI_TIANDITU_KEY",
    "MANYI_STORE_URL",
)


def _crash_log(error: BaseException) -> Path | None:
    """Keep the traceback of an unexpected error in a file, scrubbed, for a bug report."""
    stamp = datetime.now(SHANGHAI).strftime("%Y%m%d-%H%M%S")
    text = _scrub("".join(traceback.format_exception(error)))
    data_dir = _RUN.get("data_dir") or Path(os.environ.get("MANYI_DATA_DIR", "data"))
    for folder in (Path(data_dir) / "logs", Path(tempfile.gettempdir())):
        try:
            folder.mkdir(parents=True, exist_ok=True)
            path = folder / f"manyi-crash-{stamp}.log"
            path.write_text(text, encoding="utf-8")
            return path
        except OSError:
            continue
    return None


def main(argv: list[str] | None = None) -> int:
    try:
        code = app(args=argv, standalone_mode=False)
    except ManyiError as e:
        if isinstance(e, FormError):
            for p in e.problems:
                err.print(f"error: {_line(p)}", highlight=False, markup=False)
        err.print(
            f"manyi: {_line(e.summary if isinstance(e, FormError) else e)}",
            highlight=False,
            markup=False,
        )
        return e.exit_code
    except OSError as e:  # disk full, permission denied, a folder where a file should be
        where = f" ({e.filename})" if e.filename else ""
        err.print(
            _line(
                f"manyi: {e.strerror or e}{where}; check the path, its permissions and free space"
            ),
            highlight=False,
            markup=False,
        )
        return 1
    except KeyboardInterrupt:
        err.print("manyi: interrupted")
        return 130
    except typer.Exit as e:
        return e.exit_code
    except typer.Abort:
        return 1
    except TyperException as e:  # usage errors: typer prints them the usual way
        show = getattr(e, "show", None)
        if show:
            show()
        return getattr(e, "exit_code", 2)
    except Exception as e:  # a bug: one line for the user, the traceback in a file
        log = _crash_log(e)
        kept = f"; details in {log}" if log else ""
        err.print(
            f"manyi: unexpected error ({type(e).__name__}: {_line(e)[:300]}){kept}; "
            "this is a bug in manyi: please report it with that file",
            highlight=False,
            markup=False,
        )
        return 70  # EX_SOFTWARE
    return code if isinstance(code, int) else 0


if __name__ == "__main__":
    sys.exit(main())
