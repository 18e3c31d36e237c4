"""A small time bank for the tests: a programme in Langfang with its regions, two stations,
an institution, operators of every role and a few members."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import TypeVar

import pytest
import sqlalchemy as sa
from sqlalchemy import Engine
from sqlalchemy.engine import URL, make_url
from sqlalchemy.pool import NullPool

from tests._databases import MariaDBScript, copy_mariadb, mariadb_script
from tests.clocks import Clock
from tests.dbdump import dump
from timebank import Ledger, TimebankError
from timebank.bank import Policy, ServiceType, TimeBank
from timebank.testing.world import copy_sqlite

E = TypeVar("E", bound=TimebankError)

PROGRAMME = "langfang"
SECRET = b"test-secret-of-langfang"
POLICY = Policy(
    service_types={
        "body_care": ServiceType(name="Body care", weight_permille=2000),
        "shopping": ServiceType(name="Shopping", weight_permille=1000),
        "chat": ServiceType(name="Keeping company", weight_permille=1500),
    },
    confirmations_required=1,
    auto_confirm_after_minutes=24 * 60,
    service_minutes_max=8 * 60,
)


@dataclass
class World:
    bank: TimeBank
    clock: Clock
    members: dict[str, int] = field(default_factory=dict)

    @property
    def engine(self) -> Engine:
        return self.bank.ledger.engine

    def register(self, name: str, *, born: date = date(1960, 5, 1), **kw: object) -> int:
        view = self.bank.register_member(
            PROGRAMME,
            identity=f"ID-{name}",
            display_name=name.title(),
            birth_date=born,
            home_site=str(kw.pop("home_site", "xinyuan-sw")),
            operator=str(kw.pop("operator", "rec-sw")),
            **kw,  # type: ignore[arg-type]
        )
        self.members[name] = view.id
        return view.id

    def serve(
        self,
        key: str,
        volunteer: str,
        recipient: str,
        *,
        minutes: int = 60,
        ago: timedelta = timedelta(hours=2),
        service_type: str = "shopping",
        site: str = "xinyuan-sw",
        operator: str = "rec-sw",
    ) -> int:
        start = self.clock.now - ago
        return self.bank.record_service(
            key,
            programme=PROGRAMME,
            volunteer_id=self.members[volunteer],
            recipient_ids=[self.members[recipient]],
            site=site,
            service_type=service_type,
            started_at=start,
            ended_at=start + timedelta(minutes=minutes),
            operator=operator,
        ).id

    def balance(self, name: str) -> int:
        return self.bank.member(self.members[name]).balance_minutes


def build(url: str, clock: Clock, policy: Policy = POLICY) -> World:
    ledger = Ledger.open(url, clock=clock)
    bank = TimeBank(ledger, identity_secrets={PROGRAMME: SECRET})
    bank.create_programme(
        PROGRAMME,
        "Langfang time bank",
        policy=policy,
        root_region="hebei",
        root_region_name="Hebei",
        administrator="admin",
        administrator_name="Provincial administrator",
    )
    bank.add_region(PROGRAMME, "langfang-city", "Langfang", level="city", parent="hebei",
                    operator="admin")
    bank.add_region(PROGRAMME, "guangyang", "Guangyang", level="county",
                    parent="langfang-city", operator="admin")
    bank.add_region(PROGRAMME, "xinyuan", "Xinyuan street", level="township",
                    parent="guangyang", operator="admin")
    bank.add_region(PROGRAMME, "anci", "Anci", level="county", parent="langfang-city",
                    operator="admin")
    bank.add_site(PROGRAMME, "xinyuan-sw", "Xinyuan social-work station",
                  kind="social_work_station", region="xinyuan", operator="admin")
    bank.add_site(PROGRAMME, "xinyuan-vol", "Xinyuan volunteer station",
                  kind="volunteer_station", region="xinyuan", operator="admin")
    bank.add_site(PROGRAMME, "anci-sw", "Anci social-work station",
                  kind="social_work_station", region="anci", operator="admin")
    bank.add_site(PROGRAMME, "sunrise", "Sunrise care home", kind="institution",
                  region="guangyang", operator="admin")
    bank.add_operator(PROGRAMME, "gy-admin", "Guangyang administrator",
                      roles=["administrator"], region="guangyang", by="admin")
    bank.add_operator(PROGRAMME, "rec-sw", "Recorder", roles=["recorder"], site="xinyuan-sw",
                      by="gy-admin")
    bank.add_operator(PROGRAMME, "conf-sw", "Confirmer", roles=["confirmer"],
                      site="xinyuan-sw", by="gy-admin")
    bank.add_operator(PROGRAMME, "rec-vol", "Recorder", roles=["recorder", "confirmer"],
                      site="xinyuan-vol", by="gy-admin")
    bank.add_operator(PROGRAMME, "rec-anci", "Recorder", roles=["recorder", "confirmer"],
                      site="anci-sw", by="admin")
    bank.add_operator(PROGRAMME, "sunrise-op", "Redeemer", roles=["redeemer"], site="sunrise",
                      by="gy-admin")
    bank.add_operator(PROGRAMME, "audit", "Auditor", roles=["auditor", "recorder"],
                      region="guangyang", by="admin")
    world = World(bank, clock)
    for name in ("wang", "li", "zhao"):
        world.register(name)
    world.register("grandma", born=date(1938, 3, 3), acts_as="recipient")
    return world


# --- one world per backend and process, cloned for each test -------------------------------

_TEMPLATES: dict[str, tuple[str, dict[str, int]]] = {}
_MARIADB_SCRIPTS: dict[str, MariaDBScript] = {}


def opened(url: str, clock: Clock | None = None) -> Iterator[World]:
    """A fresh world on ``url``, disposed of afterwards: ``yield from opened(url)`` in a
    fixture."""
    world = fresh(url, clock or Clock())
    try:
        yield world
    finally:
        world.bank.dispose()


def fresh(url: str, clock: Clock) -> World:
    """The world of :func:`build` in the empty database at ``url``, quicker: built once per
    backend and process, then copied (SQLite: the file; PostgreSQL: CREATE DATABASE ...
    TEMPLATE; MariaDB, which has no templates: the template's statements replayed and its
    rows copied, :func:`tests._databases.copy_mariadb`)."""
    parsed = make_url(url)
    backend = parsed.get_backend_name()
    if backend not in _TEMPLATES:
        _TEMPLATES[backend] = _make_template(parsed)
    template, members = _TEMPLATES[backend]
    if backend == "sqlite":
        copy_sqlite(template, str(parsed.database))
    elif backend == "postgresql":
        _recreate_from(parsed, template)
    else:
        copy_mariadb(parsed, template, _MARIADB_SCRIPTS[template])
    ledger = Ledger.open(url, clock=clock)
    return World(TimeBank(ledger, identity_secrets={PROGRAMME: SECRET}), clock, dict(members))


def _make_template(url: URL) -> tuple[str, dict[str, int]]:
    if url.get_backend_name() == "sqlite":
        directory = Path(tempfile.mkdtemp(prefix="tb_bank_template_"))
        atexit.register(shutil.rmtree, directory, ignore_errors=True)
        target = str(directory / "world.db")
        world = build(f"sqlite:///{target}", Clock())
        world.bank.dispose()
        return target, world.members
    name = f"tb_bank_template_{os.getpid()}"
    if url.get_backend_name() == "postgresql":
        drop, create = (f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)',
                        f'CREATE DATABASE "{name}"')
    else:
        drop, create = (f"DROP DATABASE IF EXISTS `{name}`",
                        f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4")
    _admin(url, drop, create)
    atexit.register(_admin, url, drop)
    world = build(url.set(database=name).render_as_string(hide_password=False), Clock())
    world.bank.dispose()  # a template database must have no connections
    if url.get_backend_name() != "postgresql":
        _MARIADB_SCRIPTS[name] = mariadb_script(url.set(database=name))
    return name, world.members


def _recreate_from(url: URL, template: str) -> None:
    name = url.database
    _admin(url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)',
           f'CREATE DATABASE "{name}" TEMPLATE "{template}"')


def _admin(url: URL, *statements: str) -> None:
    """Run ``statements`` on the server of ``url``, connected to a database always there and
    never dropped (``url``'s own may be gone when the process ends)."""
    postgres = url.get_backend_name() == "postgresql"
    admin = url.set(database="postgres" if postgres else "information_schema")
    engine = sa.create_engine(admin, poolclass=NullPool, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            for statement in statements:
                conn.exec_driver_sql(statement)
    finally:
        engine.dispose()


def refused(world: World, cls: type[E], act: Callable[[], object], match: str | None = None) -> E:
    """``act`` must raise ``cls`` and leave every table exactly as it was."""
    before = dump(world.engine)
    with pytest.raises(cls, match=match) as caught:
        act()
    assert dump(world.engine) == before
    return caught.value


def race(attempts: int, act: Callable[[int], object],
         allowed: tuple[type[BaseException], ...]) -> list[object]:
    """Run ``act(0)`` .. ``act(attempts - 1)`` in threads released together; each outcome is
    the value returned or the ``allowed`` error raised (any other error fails the test)."""
    outcomes: list[object] = []
    barrier = threading.Barrier(attempts, timeout=30)

    def one(n: int) -> None:
        barrier.wait()
        try:
            outcomes.append(act(n))
        except allowed as exc:
            outcomes.append(exc)

    threads = [threading.Thread(target=one, args=(n,)) for n in range(attempts)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(outcomes) == attempts, outcomes
    return outcomes


def at(world: World, **delta: float) -> datetime:
    return world.clock.now + timedelta(**delta)
