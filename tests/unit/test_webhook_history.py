"""The cursor of a webhook's deliveries: a row id this API handed out, and nothing else."""

from __future__ import annotations

from typing import Any

import pytest

from dockyard.api import cursors, errors
from dockyard.api.routes.webhooks import _row_id


def test_a_cursor_holds_the_row_id_to_continue_below() -> None:
    assert cursors.read(cursors.encode([4711]), _row_id) == 4711


@pytest.mark.parametrize("position", [[True], [0], [-3], ["12"], [1.5], [1, 2], [], {"id": 1}])
def test_any_other_position_is_refused_naming_the_cursor(position: Any) -> None:
    with pytest.raises(errors.Problem) as refused:
        cursors.read(cursors.encode(position), _row_id)

    assert refused.value.status == 422
    assert [e.field for e in refused.value.errors or []] == ["query.cursor"]
