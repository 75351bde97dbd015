import pytest

from carcelery.settings import ConfigError, OutOfRange, Settings


def test_defaults_are_the_embedded_emulator():
    s = Settings.from_env({})
    assert s.target == "emulator"
    assert s.endpoint_url == "http://127.0.0.1:4566"
    assert s.broker_url == "sqs://testing:testing@127.0.0.1:4566"
    assert s.result_backend.endswith("+dynamodb://us-east-1/carcelery-results?ttl_seconds=86400")
    assert s.recognizer == "local"
    assert s.car_threshold is None
    assert s.queue_name("detect") == "carcelery-detect"


def test_aws_uses_the_standard_credential_chain():
    s = Settings.from_env({"CARCELERY_TARGET": "aws", "AWS_DEFAULT_REGION": "eu-west-1",
                           "CARCELERY_BUCKET": "njit-cs-643"})
    assert s.endpoint_url is None
    assert s.credentials == {}
    assert s.broker_url == "sqs://"
    assert s.result_backend.endswith("+dynamodb://eu-west-1/carcelery-results?ttl_seconds=86400")
    assert s.bucket == "njit-cs-643"


def test_results_expire_after_result_expires_through_the_backends_ttl():
    s = Settings.from_env({"CARCELERY_RESULT_EXPIRES": "3600"})
    assert s.result_expires == 3600
    assert s.result_backend.endswith("?ttl_seconds=3600")


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
    ({"CARCELERY_RESULT_EXPIRES": "1d"}, "CARCELERY_RESULT_EXPIRES"),
    ({"CARCELERY_RESULT_EXPIRES": "0"}, "CARCELERY_RESULT_EXPIRES"),
    ({"CARCELERY_PLATE_FORMATS": "AAA9999,1ABC234"}, "CARCELERY_PLATE_FORMATS: '1ABC234' is not a plate format"),
    ({"CARCELERY_PLATE_FORMATS": "AAA9999,,9AAA999"}, "CARCELERY_PLATE_FORMATS: '' is not a plate format"),
])
def test_bad_values_name_the_variable(env, named):
    with pytest.raises(ConfigError, match=named):
        Settings.from_env(env)


@pytest.mark.parametrize("env, message", [
    ({"CARCELERY_VISIBILITY_TIMEOUT": "43201"}, "CARCELERY_VISIBILITY_TIMEOUT=43201 is outside 0-43200"),
    ({"CARCELERY_VISIBILITY_TIMEOUT": "-1"}, "CARCELERY_VISIBILITY_TIMEOUT=-1 is outside 0-43200"),
    ({"CARCELERY_MAX_RECEIVES": "0"}, "CARCELERY_MAX_RECEIVES=0 is outside 1-1000"),
    ({"CARCELERY_MAX_RECEIVES": "1001"}, "CARCELERY_MAX_RECEIVES=1001 is outside 1-1000"),
    ({"CARCELERY_CONCURRENCY": "0"}, "CARCELERY_CONCURRENCY=0 is outside 1 or more"),
    ({"CARCELERY_WORKERS": "0", "CARCELERY_RECOGNITION_QUOTA": "50"}, "CARCELERY_WORKERS=0 is outside 1 or more"),
    ({"CARCELERY_CAR_THRESHOLD": "-5"}, "CARCELERY_CAR_THRESHOLD=-5.0 is outside 0-100"),
    ({"CARCELERY_KEEP_RUNS": "0"}, "CARCELERY_KEEP_RUNS=0 is outside 1 or more"),
])
def test_numbers_out_of_range_name_the_variable_the_value_and_the_range(env, message):
    with pytest.raises(OutOfRange) as raised:
        Settings.from_env(env)
    assert str(raised.value).startswith(message + "; set it within")


def test_numbers_at_the_ends_of_their_ranges_are_accepted():
    s = Settings.from_env({"CARCELERY_VISIBILITY_TIMEOUT": "43200", "CARCELERY_MAX_RECEIVES": "1000",
                           "CARCELERY_CONCURRENCY": "1", "CARCELERY_WORKERS": "1"})
    assert (s.visibility_timeout, s.max_receives, s.concurrency, s.workers) == (43200, 1000, 1, 1)
    assert Settings.from_env({"CARCELERY_VISIBILITY_TIMEOUT": "0", "CARCELERY_MAX_RECEIVES": "1"}).max_receives == 1


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


@pytest.mark.parametrize("recognizer, pool, concurrency", [
    ("local", "prefork", None), ("noop", "prefork", None),  # None: Celery's default, one process per core
    ("rekognition", "threads", 32), ("latency", "threads", 32),
])
def test_pool_and_concurrency_follow_the_recognizer(recognizer, pool, concurrency):
    s = Settings.from_env({"CARCELERY_RECOGNIZER": recognizer})
    assert (s.pool, s.concurrency) == (pool, concurrency)


def test_pool_and_concurrency_can_be_set():
    s = Settings.from_env({"CARCELERY_RECOGNIZER": "rekognition", "CARCELERY_POOL": "prefork",
                           "CARCELERY_CONCURRENCY": "8"})
    assert (s.pool, s.concurrency) == ("prefork", 8)
    with pytest.raises(ConfigError, match="CARCELERY_POOL"):
        Settings.from_env({"CARCELERY_POOL": "fibers"})


def test_the_quota_is_split_between_the_workers():
    assert Settings.from_env({}).rate_limit is None
    assert Settings.from_env({"CARCELERY_RECOGNITION_QUOTA": "50"}).rate_limit == "50/s"
    assert Settings.from_env({"CARCELERY_RECOGNITION_QUOTA": "50", "CARCELERY_WORKERS": "4"}).rate_limit == "12.5/s"


def test_the_old_per_worker_rate_limit_names_its_replacement():
    with pytest.raises(ConfigError, match="CARCELERY_RECOGNITION_QUOTA"):
        Settings.from_env({"CARCELERY_RATE_LIMIT": "5/s"})


def test_latency_settings():
    s = Settings.from_env({"CARCELERY_LATENCY": "0.5", "CARCELERY_LATENCY_JITTER": "0", "CARCELERY_THROTTLE": "0.1"})
    assert (s.latency, s.latency_jitter, s.throttle) == (0.5, 0.0, 0.1)
    with pytest.raises(ConfigError, match="CARCELERY_THROTTLE"):
        Settings.from_env({"CARCELERY_THROTTLE": "10"})


@pytest.mark.parametrize("raw, expected", [
    (None, ("AAA9999", "9AAA999", "AAA9A99", "AA999AA", "AA99AAA", "9999AAA")),
    ("", ("AAA9999", "9AAA999", "AAA9A99", "AA999AA", "AA99AAA", "9999AAA")),
    ("none", ()),
    (" aaa999 , 999aaa ", ("AAA999", "999AAA")),
])
def test_plate_formats(raw, expected):
    assert Settings.from_env({} if raw is None else {"CARCELERY_PLATE_FORMATS": raw}).plate_formats == expected
