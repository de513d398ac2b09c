"""``install --env``: the generation staged with a deploy, and its undo (appconfig/generations.py).

The undo is handed to the deploy's steps: restore.py runs it when the
previous release comes back, and the install runs it again on its way out
of any failure, so it must do its work once only.
"""

from __future__ import annotations

import os
from pathlib import Path

from pyrelctl.appconfig.generations import Generations, GenMark, stage_with_deploy
from pyrelctl.layout import Layout


def test_the_undo_restores_the_previous_generation_once(tmp_path: Path) -> None:
    app = Layout(tmp_path / "root").app("hello")
    gens = Generations(app)
    gens.switch(gens.create({"A": "1"}))
    said: list[str] = []
    undo = stage_with_deploy(app, {"B": "2"}, said.append)
    assert undo is not None and gens.current() == 2 and gens.values() == {"A": "1", "B": "2"}
    undo()
    assert gens.current() == 1 and gens.info(2).mark is GenMark.FAILED
    # A generation made since (a later change) is not switched away by a second call.
    gens.switch(gens.create({"A": "3"}))
    undo()
    assert gens.current() == 3
    assert os.readlink(app.etc / "config/current.env") == "000003.env"
    assert said == ["configuration generation 2 (+ B)", "configuration generation 1 restored"]


def test_nothing_to_stage_gives_no_undo(tmp_path: Path) -> None:
    app = Layout(tmp_path / "root").app("hello")
    gens = Generations(app)
    gens.switch(gens.create({"A": "1"}))
    assert stage_with_deploy(app, {"A": "1"}, lambda _: None) is None
    assert gens.current() == 1
