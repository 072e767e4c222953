"""Split identifiers off a wrongly merged person, through the identity stage.

The identity stage owns the graph and its merge log; this is the profile-side service the API and
``huaxiang profile unmerge`` call: it names the person and runs the identity stage's unmerge for
each identifier (or one link) in one store transaction. Attributes and consent follow the
identifiers they were stored against, so nothing else has to move.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from huaxiang.errors import Problem, ValidationError
from huaxiang.identity.identifiers import Identifier
from huaxiang.profiles.keys import checked_value
from huaxiang.profiles.view import resolve_ref

if TYPE_CHECKING:
    from huaxiang.runtime import Runtime


def parse_identifiers(texts: Sequence[str], runtime: Runtime) -> list[Identifier]:
    """``type:value`` texts as normalised identifiers; every bad one is named at once."""
    problems: list[Problem] = []
    found: list[Identifier] = []
    for text in texts:
        id_type, sep, raw = text.strip().partition(":")
        if not sep or runtime.settings.identifier_type(id_type) is None:
            types = ", ".join(t.name for t in runtime.settings.identifier_types)
            problems.append(
                Problem(text, "not an identifier", hint=f"write type:value with a type of {types}")
            )
            continue
        value = checked_value(id_type, raw, runtime.settings)
        if isinstance(value, str):
            found.append(Identifier(id_type, value))
        else:
            problems.append(Problem(text, value.reason))
    if problems:
        raise ValidationError(problems, what="unmerge request")
    return found


def unmerge_person(
    runtime: Runtime,
    ref: str,
    identifiers: Sequence[str] = (),
    *,
    link_id: int | None = None,
    reason: str,
) -> dict[str, Any]:
    """Split ``identifiers`` (or one link) off the person named by ``ref``, in one transaction.

    Returns the person, the revoked links and the persons the identifiers belong to afterwards.
    If anything fails the transaction rolls back and the identity graph is reloaded from the
    tables, so memory and store stay the same.
    """
    wanted = parse_identifiers(identifiers, runtime)
    problems: list[Problem] = []
    if not reason.strip():
        problems.append(Problem("reason", "empty", hint="say why; it is kept in the merge log"))
    if bool(wanted) == (link_id is not None):
        problems.append(
            Problem(
                "identifiers",
                "name identifiers or a link id, not both and not neither",
                hint="e.g. --identifier phone:13912345678 (links are listed by `profile show`)",
            )
        )
    if problems:
        raise ValidationError(problems, what="unmerge request")
    identity = runtime.identity
    try:
        with runtime.store.transaction() as con:
            person_id = resolve_ref(con, runtime.settings, ref)
            revoked: list[int] = []
            results: list[Any] = []
            if link_id is not None:
                results.append(identity.unmerge(con, person_id, link_id=link_id, reason=reason))
            for identifier in wanted:
                results.append(
                    identity.unmerge(con, person_id, identifier=identifier, reason=reason)
                )
            persons: set[int] = set()
            for result in results:
                revoked.extend(result.revoked_link_ids)
                persons.update(result.person_ids)
            survivor = results[-1].person_id if results else person_id
            others = sorted(persons - {survivor})
            keys = [
                str(row[0])
                for row in con.execute(
                    """
                    SELECT person_key FROM persons
                    WHERE person_id IN (SELECT unnest(?::UINTEGER[])) ORDER BY person_id
                    """,
                    [others],
                ).fetchall()
            ]
    except BaseException:
        cursor = runtime.store.cursor()
        try:
            identity.reload(cursor)
        finally:
            cursor.close()
        raise
    return {
        "person_id": survivor,
        "new_person_ids": others,
        "new_person_keys": keys,
        "revoked_link_ids": sorted(revoked),
    }
