"""The API's routes about dead letters: list them a page at a time, put one back.

A dead letter is an event the engine could not apply (orchestrator.store.
deadletters). Putting one back appends its event, with its original id, to
its instance's inbox, as `orchestrator dead-letters replay ID` does, with the
same refusals: an unknown id is a 404, a letter that holds no event a 400.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Query

from orchestrator.entry.http.api_errors import blame
from orchestrator.entry.http.auth import Operate, Read
from orchestrator.entry.http.door import TheDoor

router = APIRouter(tags=["dead letters"])
MAX_PAGE = 500


@router.get("/dead-letters")
def dead_letters(
    door: TheDoor,
    _: Read,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE, description="At most this many.")] = 100,
    cursor: Annotated[
        str | None, Query(max_length=50, description="`next` of the last page.")
    ] = None,
) -> dict[str, Any]:
    """A page of dead letters, oldest first; `next` is the cursor of the next (null: none)."""
    with blame("cursor"):
        letters, after = door.client.dead_letter_page(limit, cursor or None)
    return {"dead_letters": letters, "next": after}


@router.post("/dead-letters/{letter_id}/replay")
def replay(
    letter_id: Annotated[str, Path(max_length=50, description="The dead letter's id.")],
    door: TheDoor,
    _: Operate,
) -> dict[str, Any]:
    """Put a dead letter back into its instance's inbox, to be applied again."""
    with blame("letter_id"):
        replayed = door.client.dead_letters.replay([letter_id])
    return {"replayed": replayed}
