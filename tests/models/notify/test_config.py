"""The routing file and Slack settings: every mistake is one line naming the file and key; secrets stay in env."""

from __future__ import annotations

from pathlib import Path

import pytest

from models.notify.config import NotifyConfigError, Routing, SlackConfig, load_notify_config


def _load(tmp_path: Path, text: str):  # type: ignore[no-untyped-def]
    path = tmp_path / "notify.yaml"
    path.write_text(text)
    return load_notify_config(path, SlackConfig())


def test_documented_example_loads(tmp_path: Path) -> None:
    cfg = _load(
        tmp_path,
        'default_channel: "#deploy-risk"\nsquads: {payments-falcon: "#falcon", payments: C0123ABCD}\n'
        "alert_bands: [high, medium]\nmin_probability: 0.4\n"
        'deploy_url: "https://github.com/acme/{service}/deployments/{deploy_id}"\nmlflow_url: "http://mlflow:5000"\n',
    )
    assert cfg.rule.fires("medium", 0.1) and cfg.rule.fires("low", 0.5) and not cfg.rule.fires("low", 0.3)
    assert cfg.routing.channel("payments-falcon", "payments", {}) == "#falcon"
    assert cfg.routing.channel("other", "payments", {}) == "C0123ABCD"
    assert cfg.links.deploy("svc", "7", None) == "https://github.com/acme/svc/deployments/7"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("alert_bands: [critical]\n", "alert_bands: unknown band 'critical'"),
        ("min_probability: lots\n", "min_probability: expected a number"),
        ("min_probability: 1.5\n", "min_probability: must be in (0, 1]"),
        ("squads: [a, b]\n", "squads: expected a mapping"),
        ("chanel: '#x'\n", "unknown key 'chanel'"),
        ("deploy_url: 'https://x/{repo}'\n", "deploy_url: unknown placeholder"),
        ("default_channel: https://hooks.slack.com/services/T/B/x\n", "holds a Slack secret"),
        ("squads: {a: xoxb-123}\n", "holds a Slack secret"),
        ("squads: {a: [\n", "invalid YAML"),
    ],
)
def test_mistakes_name_the_file_and_key(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(NotifyConfigError) as err:
        _load(tmp_path, text)
    assert str(err.value).startswith(str(tmp_path / "notify.yaml")) and message in str(err.value)


def test_credentials_come_from_the_environment_only() -> None:
    assert SlackConfig.from_env({}).enabled is False
    bot = SlackConfig.from_env({"SLACK_BOT_TOKEN": "xoxb-1", "SLACK_API_URL": "http://127.0.0.1:9/api/"})
    assert bot.mode == "bot token" and bot.base_url == "http://127.0.0.1:9/api/" and "xoxb-1" not in repr(bot)
    with pytest.raises(NotifyConfigError, match="not both"):
        SlackConfig.from_env({"SLACK_BOT_TOKEN": "xoxb-1", "SLACK_WEBHOOK_URL": "https://hooks.slack.com/x"})


def test_routing_order_and_channel_names() -> None:
    routing = Routing("deploy-risk", {"sq": "#mapped"})
    assert routing.channel("sq", "tr", {"sq": "cat"}, "svc") == "#mapped"
    assert routing.channel("other", "tr", {"other": "cat"}, "svc-channel") == "#svc-channel"
    assert routing.channel("other", "tr", {"tr": "tribe-chan"}) == "#tribe-chan"
    assert routing.channel(None, None, {}) == "#deploy-risk"
