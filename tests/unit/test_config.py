from __future__ import annotations

from pathlib import Path

import pytest

from huaxiang.config import DEFAULT_CONFIG_TEXT, Workspace, settings_from_dict
from huaxiang.errors import ConfigError, WorkspaceNotFound


def test_default_file_gives_default_settings(workspace: Workspace) -> None:
    settings = workspace.settings()
    assert settings.timezone == "Asia/Shanghai"
    assert settings.default_region == "CN"
    phone = settings.identifier_type("phone")
    assert phone is not None and phone.normalizer == "phone" and phone.max_per_person == 2
    assert settings.identifier_type("user_id") is not None
    assert settings.precedence_for("name") == ("api", "crm", "import", "sdk")
    assert "queue_limit" in DEFAULT_CONFIG_TEXT
    assert settings.realtime_dedicated_core == "auto"
    assert settings_from_dict({"realtime": {"dedicated_core": True}}).realtime_dedicated_core
    assert settings.realtime_interpreter_priority is True
    assert (settings.serve_processes, settings.serve_store_nice) == (1, 10)
    two = settings_from_dict({"serve": {"processes": 2, "store_nice": 0}})
    assert (two.serve_processes, two.serve_store_nice) == (2, 0)
    off = {"realtime": {"interpreter_priority": False}}
    assert settings_from_dict(off).realtime_interpreter_priority is False
    assert settings.realtime_sched_priority == 1
    assert settings_from_dict({"realtime": {"sched_priority": 0}}).realtime_sched_priority == 0


def test_new_identifier_type_and_attribute_precedence() -> None:
    settings = settings_from_dict(
        {
            "identity": {"types": {"douyin_openid": {"priority": 85, "max_per_person": 2}}},
            "profiles": {"attribute_precedence": {"name": ["crm", "sdk"]}},
        }
    )
    douyin = settings.identifier_type("douyin_openid")
    assert douyin is not None and douyin.priority == 85 and douyin.max_per_person == 2
    assert settings.precedence_for("name") == ("crm", "sdk")
    priorities = [t.priority for t in settings.identifier_types]
    assert priorities == sorted(priorities)


@pytest.mark.parametrize(
    ("data", "fragment"),
    [
        ({"dedupe_days": 3}, "dedupe_days"),
        ({"identity": {"types": {"x": {"normalizer": "magic"}}}}, "normalizer"),
        ({"identity": {"types": {"x": 5}}}, "must be a table"),
        ({"realtime": {"dedicated_core": "yes"}}, "realtime.dedicated_core"),
        ({"realtime": {"interpreter_priority": "on"}}, "realtime.interpreter_priority"),
        ({"ingest": {"queue_limit": "many"}}, "ingest.queue_limit: is 'many', not a whole"),
        ({"tags": {"schedule_interval_s": -1}}, "tags.schedule_interval_s: is -1"),
        ({"profiles": {"source_precedence": ["crm", "fax"]}}, "names fax"),
        ({"realtime": 5}, "realtime: must be a table"),
        ({"serve": {"processes": 3}}, "serve.processes: is 3 .set it to 1 or 2."),
        ({"serve": {"store_nice": 25}}, "serve.store_nice: is 25 .set it to 0 to 19."),
        ({"realtime": {"sched_priority": 100}}, "realtime.sched_priority: is 100 .set it to 0 to"),
        ({"realtime": {"sched_priority": True}}, "realtime.sched_priority: is True, not a whole"),
    ],
)
def test_bad_settings_name_the_problem(data: dict[str, object], fragment: str) -> None:
    with pytest.raises(ConfigError, match=fragment):
        settings_from_dict(data)


def test_every_problem_is_named_at_once(workspace: Workspace) -> None:
    workspace.config_path.write_text(
        "dedupe_days = 3\n"
        "[ingest]\nqueue_limit = 1.5\n"
        '[identity.types.douyin_openid]\npriority = 85\nnormalizer = "magic"\n'
        '[profiles.attribute_precedence]\nname = ["crm", "fax"]\n'
        '[realtime]\ndedicated_core = "yes"\n',
        encoding="utf-8",
    )
    with pytest.raises(ConfigError) as raised:
        workspace.settings()
    text = str(raised.value)
    assert "5 problem(s)" in text
    for fragment in (
        "dedupe_days: is 3 (set it to 7 or more)",
        "ingest.queue_limit: is 1.5, not a whole number",
        "identity.types.douyin_openid.normalizer: is 'magic' (use phone, email, lower, text)",
        "profiles.attribute_precedence.name: names fax (use api, crm, import, sdk)",
        "realtime.dedicated_core: is 'yes'",
    ):
        assert fragment in text


def test_invalid_toml_names_the_file(workspace: Workspace) -> None:
    workspace.config_path.write_text("timezone = \n", encoding="utf-8")
    with pytest.raises(ConfigError, match="not valid TOML"):
        workspace.settings()


def test_missing_workspace_says_run_init(tmp_path: Path) -> None:
    with pytest.raises(WorkspaceNotFound, match="huaxiang init"):
        Workspace(tmp_path / "nowhere").settings()


def test_create_is_idempotent_and_token_private(tmp_path: Path) -> None:
    ws = Workspace(tmp_path / "w")
    token = ws.create()
    assert token.startswith("hxa_")
    assert ws.create() == token
    assert ws.admin_token_path.stat().st_mode & 0o077 == 0
