"""Which migration a database must be at for this code to serve it, read from the scripts'
text: the container's healthcheck (app/ready.py) asks it every 15 s, and alembic would import
every script, and SQLAlchemy with them, to answer."""

from __future__ import annotations

import ast
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path

MIGRATION_SCRIPTS = Path(__file__).resolve().parent.parent / "migrations" / "versions"


def serves_revision(applied: str | None) -> bool:
    """Whether this code serves a database migrated to `applied`: its own head, or a revision
    it does not know, a newer release's (whose migrations, run first in a deploy, keep the
    previous release working: its processes serve on until they are replaced). One behind, or
    none, is not served."""
    if not applied:
        return False
    head, known = _this_codes_revisions()
    return applied == head or applied not in known


def head_revision() -> str | None:
    """This code's migration head: what `make migrate` brings a database to."""
    return _this_codes_revisions()[0]


@lru_cache(maxsize=1)
def _this_codes_revisions() -> tuple[str | None, frozenset[str]]:
    return migration_revisions()


def migration_revisions(scripts: Path = MIGRATION_SCRIPTS) -> tuple[str | None, frozenset[str]]:
    """(The head revision, every revision) of the migration scripts in `scripts`."""
    parents: dict[str, set[str]] = {}
    for script in scripts.glob("*.py"):
        names = _module_constants(script, ("revision", "down_revision"))
        revision = names.get("revision")
        if isinstance(revision, str):
            parents[revision] = _revision_names(names.get("down_revision"))
    below = set[str]().union(*parents.values())
    heads = sorted(set(parents) - below)
    if len(heads) > 1:
        raise RuntimeError(f"migrations have {len(heads)} heads: {', '.join(heads)}")
    return (heads[0] if heads else None), frozenset(parents)


def _revision_names(value: object) -> set[str]:
    """A down_revision: one name, none, or several (a merge)."""
    if isinstance(value, str):
        return {value}
    return {str(name) for name in value} if isinstance(value, tuple | list) else set()


def _module_constants(path: Path, names: Sequence[str]) -> dict[str, object]:
    found: dict[str, object] = {}
    for node in ast.parse(path.read_text(encoding="utf-8"), str(path)).body:
        targets: list[ast.expr]
        if isinstance(node, ast.AnnAssign) and node.value is not None:
            targets, value = [node.target], node.value
        elif isinstance(node, ast.Assign):
            targets, value = node.targets, node.value
        else:
            continue
        for target in targets:
            if isinstance(target, ast.Name) and target.id in names:
                found[target.id] = ast.literal_eval(value)
    return found
