"""`orbit auto-recovery`: the everywhere switch the sensor's policy reads."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import Engine

from orbit_pipelines.cli import main
from orbit_pipelines.recovery.policy import switched_off


def test_off_then_on_is_what_the_policy_sees(
    db_url: str, engine: Engine, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("ORBIT_POSTGRES_URL", db_url)

    assert main(["auto-recovery", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["auto_recovery"] is True

    assert main(["auto-recovery", "off"]) == 0
    assert "OFF everywhere" in capsys.readouterr().out
    with engine.connect() as conn:
        why = switched_off(conn, "some-root-run", {})
    assert why is not None and "off everywhere" in why

    assert main(["auto-recovery", "on", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["auto_recovery"] is True
    with engine.connect() as conn:
        assert switched_off(conn, "some-root-run", {}) is None


def test_unknown_state_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["auto-recovery", "maybe"]) == 2
    assert "invalid choice" in capsys.readouterr().err
