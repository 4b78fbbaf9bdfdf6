"""Targets: the database servers (or SQLite files) Covet backs up, and the plain values an engine takes."""

import os
from pathlib import Path

from django.conf import settings

from backups.models import DatabaseTarget
from core.audit import audit
from covet.engines import ConnectionParams, open_engine
from covet.errors import NotFoundError, UsageError

def get_target(name: str) -> DatabaseTarget:
    """Return the target called ``name`` or raise NotFoundError."""
    try:
        return DatabaseTarget.objects.get(name=name)
    except DatabaseTarget.DoesNotExist:
        raise NotFoundError(f"no target named {name!r}; 'manage.py target list' shows them") from None


def _password_ref(password_file: str | None) -> str:
    if not password_file:
        return ""
    path = Path(password_file).resolve()
    if not path.is_file():
        raise NotFoundError(f"password file {path} does not exist")
    return f"file:{path}"


def add_target(name: str, engine: str, database: str, host: str = "", port: int | None = None,
               user: str = "", password_file: str | None = None, actor: str = "", source: str = "") -> DatabaseTarget:
    """Register a target; its password stays in ``password_file`` and only the path is kept."""
    if DatabaseTarget.objects.filter(name=name).exists():
        raise UsageError(f"a target named {name!r} already exists")
    if engine == "sqlite":
        database = str(Path(database).resolve())
    target = DatabaseTarget.objects.create(
        name=name, engine=engine, database=database, host=host or "", port=port, user=user or "",
        password_ref=_password_ref(password_file),
    )
    audit(actor, "target.add", "target", target.name, source, engine=target.engine)
    return target


def remove_target(name: str, actor: str = "", source: str = "") -> None:
    """Remove a target that has no backups left."""
    target = get_target(name)
    count = target.backups.count()
    if count:
        raise UsageError(f"target {name!r} still has {count} backup(s) in the catalog; delete them first")
    target.delete()
    audit(actor, "target.remove", "target", name, source)


def set_target_password(target: DatabaseTarget, password: str) -> None:
    """Write ``password`` to a 0600 file in the secrets directory and keep only its path."""
    secrets_dir = Path(settings.COVET_SECRETS_DIR)
    secrets_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    path = secrets_dir / f"target-{target.name}.password"
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(password)
    os.replace(tmp, path)
    target.password_ref = f"file:{path}"
    target.save(update_fields=["password_ref"])


def record_target_saved(target: DatabaseTarget, password: str, created: bool, actor: str, source: str) -> None:
    """After the admin saved a target: keep a password typed there in a 0600 file, and record the change."""
    if password:
        set_target_password(target, password)
    audit(actor, "target.add" if created else "target.change", "target", target.name, source)


def adhoc_target(engine: str, database: str, host: str = "", port: int | None = None, user: str = "",
                 password_file: str | None = None) -> DatabaseTarget:
    """Return the target for command-line connection flags, registering it on first use."""
    if engine == "sqlite":
        database = str(Path(database).resolve())
        base = Path(database).stem
    else:
        base = f"{host or 'local'}-{port or 'default'}"
    name = f"{engine}-{base}"[:90].lower()
    name = "".join(c if c.isalnum() or c in "-_" else "-" for c in name)
    for candidate in [name] + [f"{name}-{i}" for i in range(2, 100)]:
        existing = DatabaseTarget.objects.filter(name=candidate).first()
        if existing is None:
            return add_target(candidate, engine, database, host, port, user, password_file)
        if (existing.engine, existing.host, existing.port, existing.user) == (engine, host or "", port, user or "") \
                and (engine != "sqlite" or existing.database == database):
            return existing
    raise UsageError("too many ad-hoc targets with the same name; register one with 'manage.py target add'")


def connection_params(target: DatabaseTarget) -> ConnectionParams:
    """Translate a target into the plain values an engine takes."""
    password_file = target.password_ref[5:] if target.password_ref.startswith("file:") else None
    return ConnectionParams(host=target.host, port=target.port, user=target.user, password_file=password_file)


def target_engine(target: DatabaseTarget, tmp_dir: Path):
    """Open the engine for a target, with ``tmp_dir`` as its scratch space."""
    return open_engine(target.engine, connection_params(target), str(tmp_dir))
