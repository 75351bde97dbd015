import pytest

from carcelery.settings import ConfigError, Settings


def test_defaults_are_the_embedded_emulator():
    s = Settings.from_env({})
    assert s.target == "emulator"
    assert s.endpoint_url == "http://127.0.0.1:4566"
    assert s.broker_url == "sqs://testing:testing@127.0.0.1:4566"
    assert s.result_backend.endswith("+dynamodb://us-east-1/carcelery-results")
    assert s.recognizer == "local"
    assert s.car_threshold is None
    assert s.queue_name("detect") == "carcelery-detect"


def test_aws_uses_the_standard_credential_chain():
    s = Settings.from_env({"CARCELERY_TARGET": "aws", "AWS_DEFAULT_REGION": "eu-west-1",
                           "CARCELERY_BUCKET": "njit-cs-643"})
    assert s.endpoint_url is None
    assert s.credentials == {}
    assert s.broker_url == "sqs://"
    assert s.result_backend.endswith("+dynamodb://eu-west-1/carcelery-results")
    assert s.bucket == "njit-cs-643"


def test_region_setting_wins_over_aws_default_region():
    assert Settings.from_env({"CARCELERY_REGION": "us-west-2", "AWS_DEFAULT_REGION": "eu-west-1"}).region == "us-west-2"


@pytest.mark.parametrize("env, named", [
    ({"CARCELERY_TARGET": "gcp"}, "CARCELERY_TARGET"),
    ({"CARCELERY_RECOGNIZER": "yolo"}, "CARCELERY_RECOGNIZER"),
    ({"CARCELERY_EMULATOR_PORT": "http"}, "CARCELERY_EMULATOR_PORT"),
    ({"CARCELERY_CAR_THRESHOLD": "101"}, "CARCELERY_CAR_THRESHOLD"),
    ({"CARCELERY_OUTPUT_URI": "/tmp/out"}, "CARCELERY_OUTPUT_URI"),
    ({"CARCELERY_OUTPUT_URI": "s3:///prefix"}, "CARCELERY_OUTPUT_URI"),
    ({"CARCELERY_RUN_DEADLINE": "soon"}, "CARCELERY_RUN_DEADLINE"),
])
def test_bad_values_name_the_variable(env, named):
    with pytest.raises(ConfigError, match=named):
        Settings.from_env(env)


def test_threshold_and_paths_are_parsed():
    s = Settings.from_env({"CARCELERY_CAR_THRESHOLD": "85.5", "CARCELERY_OUTPUT_DIR": "/tmp/x",
                           "CARCELERY_MODEL_DIR": "~/m"})
    assert s.car_threshold == 85.5
    assert str(s.output_dir) == "/tmp/x"
    assert not str(s.model_dir).startswith("~")
    s = Settings.from_env({"CARCELERY_OUTPUT_URI": "s3://b/p/", "CARCELERY_RUN_DEADLINE": "90"})
    assert (s.output_uri, s.run_deadline) == ("s3://b/p/", 90.0)


def test_monitoring_is_on_and_task_sent_events_off_by_default():
    s = Settings.from_env({})
    assert s.monitoring is True and s.task_sent_events is False
    assert (s.flower_port, s.flower_user, s.flower_password) == (5555, "", "")


@pytest.mark.parametrize("raw, expected", [("off", False), ("0", False), ("False", False), ("on", True), ("1", True)])
def test_monitoring_switch(raw, expected):
    assert Settings.from_env({"CARCELERY_MONITORING": raw}).monitoring is expected


def test_a_bad_switch_names_the_variable():
    with pytest.raises(ConfigError, match="CARCELERY_TASK_SENT_EVENTS"):
        Settings.from_env({"CARCELERY_TASK_SENT_EVENTS": "maybe"})
