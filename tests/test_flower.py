"""The Flower launcher's command line: loopback only, basic auth only when both are set."""

from carcelery.commands.flower import command
from carcelery.settings import Settings


def test_flower_listens_on_loopback_on_the_configured_port():
    argv, _ = command(Settings.from_env({"CARCELERY_FLOWER_PORT": "5601"}), ["--max_tasks=500"])
    assert argv[1:] == ["-m", "celery", "-A", "carcelery", "flower", "--address=127.0.0.1", "--port=5601",
                        "--max_tasks=500"]


def test_basic_auth_goes_through_the_environment_not_the_command_line():
    config = Settings.from_env({"CARCELERY_FLOWER_USER": "ann", "CARCELERY_FLOWER_PASSWORD": "s3cret"})
    argv, env = command(config, [])
    assert env["FLOWER_BASIC_AUTH"] == "ann:s3cret"
    assert not any("s3cret" in arg for arg in argv)


def test_no_basic_auth_without_a_password():
    _, env = command(Settings.from_env({"CARCELERY_FLOWER_USER": "ann"}), [])
    assert "FLOWER_BASIC_AUTH" not in env
