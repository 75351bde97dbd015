"""deploy/: the CloudFormation template, the systemd units and the scripts, checked by their own tools
(cfn-lint, systemd-analyze, shellcheck) and run: the template on the emulator's CloudFormation, the
units' command lines against the emulator."""

import base64
import configparser
import json
import re
import shlex
import shutil
import subprocess
import sys
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import pytest
from cfnlint.decode import cfn_yaml
from test_monitoring import PASSWORD, USER, flower_get, flower_url, wait_for
from test_pipeline import dispatch

from conftest import free_port

from carcelery import aws
from carcelery.pipeline import ledger, records, results
from carcelery.aws import provision
from carcelery.embedded.demo import ROOT, Stack
from carcelery.settings import DEAD_LETTER_QUEUE, DETECT_QUEUE, TEXT_QUEUE, Settings

DEPLOY = ROOT / "deploy"
TEMPLATE = DEPLOY / "carcelery.yaml"
UNITS = sorted((DEPLOY / "systemd").glob("*.service"))
# Where the units expect the project (deploy/install.sh puts it there).
HOME = "/opt/carcelery"
BIN = Path(sys.executable).parent
# Parameters of the template without a default.
REQUIRED = {"Repository": "https://example.invalid/carcelery.git", "KeyName": "carcelery-test",
            "SshCidr": "203.0.113.0/24"}


def template():
    return cfn_yaml.load(str(TEMPLATE))


def resolve(node, values: dict):
    """``node`` of the template with its ``Fn::Sub``, ``Fn::Select``, ``Fn::Split`` and ``Fn::If`` worked out
    from ``values`` (a condition by its name: True or False), ``AWS::NoValue`` left out."""
    if isinstance(node, dict):
        if list(node) == ["Fn::Sub"]:
            text, more = (node["Fn::Sub"], {}) if isinstance(node["Fn::Sub"], str) else node["Fn::Sub"]
            more = {k: resolve(v, values) for k, v in more.items()}
            return re.sub(r"\$\{([^}]+)\}", lambda m: {**values, **more}[m.group(1)], text)
        if list(node) == ["Ref"]:
            return NO_VALUE if node == NO_VALUE else values.get(node["Ref"], node)
        if list(node) == ["Fn::Select"]:
            index, items = node["Fn::Select"]
            return resolve(items, values)[index]
        if list(node) == ["Fn::Split"]:
            separator, text = node["Fn::Split"]
            return resolve(text, values).split(separator)
        if list(node) == ["Fn::If"]:
            condition, then, otherwise = node["Fn::If"]
            return resolve(then if values[condition] else otherwise, values)
        return {k: v for k, v in ((k, resolve(v, values)) for k, v in node.items()) if v is not NO_VALUE}
    if isinstance(node, list):
        return [v for v in (resolve(v, values) for v in node) if v is not NO_VALUE]
    return node


NO_VALUE = {"Ref": "AWS::NoValue"}


def policy_file(bucket="BUCKET", prefix="carcelery-", region="*", account="*", output: str | None = None,
                name="iam-policy.json") -> dict:
    """deploy/iam-policy.json (or ``name``), for ``bucket``, the names under ``prefix`` in ``region`` and
    ``account``, and outputs uploaded to ``output`` (s3://bucket/prefix/; None: its statement left out)."""
    text = (DEPLOY / name).read_text()
    text = text.replace("arn:aws:s3:::BUCKET", f"arn:aws:s3:::{bucket}")
    if output:
        text = text.replace("OUTPUT_BUCKET/OUTPUT_PREFIX", output.removeprefix("s3://"))
    policy = json.loads(re.sub(r":\*:\*:(table/)?carcelery-", lambda m: f":{region}:{account}:{m.group(1) or ''}{prefix}",
                               text))
    if output is None:
        policy["Statement"] = [s for s in policy["Statement"] if s["Sid"] != "Outputs"]
    return policy


@pytest.mark.integration
def test_template_passes_cfn_lint():
    lint = subprocess.run([BIN / "cfn-lint", TEMPLATE], capture_output=True, text=True)
    assert lint.returncode == 0 and not lint.stderr, lint.stdout + lint.stderr


@pytest.mark.parametrize("output", [None, "s3://outputs/carcelery/"])
def test_template_role_has_the_policy_of_deploy_iam_policy_json(output):
    role = template()["Resources"]["Role"]["Properties"]["Policies"]
    values = {"Bucket": "BUCKET", "NamePrefix": "carcelery-", "AWS::Partition": "aws", "AWS::Region": "*",
              "AWS::AccountId": "*", "OutputUri": output or "", "HasOutputUri": bool(output)}
    assert [resolve(p["PolicyDocument"], values) for p in role] == [policy_file(output=output)]


def user_data(instance: str, **values: str) -> str:
    """The user data of ``instance``, with ``values``, else the parameters' defaults, REQUIRED and sample names."""
    parameters = template()["Parameters"]
    values = {**{k: p["Default"] for k, p in parameters.items() if "Default" in p}, **REQUIRED,
              "AWS::Region": "us-east-1", "AWS::StackName": "carcelery", "ResultsTable": "carcelery-results",
              "LedgerTable": "carcelery-ledger", "RecordsTable": "carcelery-records", **values}
    return resolve(template()["Resources"][instance]["Properties"]["UserData"]["Fn::Base64"], values)


def test_user_data_of_a_and_b_differ_in_the_role_only():
    a = user_data("InstanceA")
    for old, new in (("Instance A", "Instance B"), ("install.sh a", "install.sh b"), ("InstanceA", "InstanceB")):
        assert old in a
        a = a.replace(old, new)
    assert a == user_data("InstanceB")


@pytest.mark.integration
def test_user_data_and_install_script_pass_shellcheck(tmp_path):
    scripts = [DEPLOY / "install.sh"]
    for instance in ("InstanceA", "InstanceB"):
        scripts.append(tmp_path / f"{instance}.sh")
        scripts[-1].write_text(user_data(instance))
    check = subprocess.run([BIN / "shellcheck", "-x", *scripts], cwd=ROOT, capture_output=True, text=True)
    assert check.returncode == 0 and not check.stderr, check.stdout + check.stderr


SYSTEMD_ANALYZE = pytest.mark.skipif(
    not shutil.which("systemd-analyze"),
    reason="systemd-analyze is not installed (Debian's package systemd; .ci/run installs it)")


def verify(unit: Path, text: str, root: Path) -> subprocess.CompletedProcess:
    """``systemd-analyze verify`` of ``text`` as ``unit``, in a root of its own: the system's
    unit folder (the targets units refer to), the unit, and a stand-in for the program
    it starts, which verify checks is there."""
    shutil.copytree("/usr/lib/systemd/system", root / "usr/lib/systemd/system", symlinks=True)
    (root / "etc/systemd/system").mkdir(parents=True)
    (root / "etc/systemd/system" / unit.name).write_text(text)
    executable = root / shlex.split(service(unit)["ExecStart"])[0].lstrip("/")
    executable.parent.mkdir(parents=True)
    executable.write_text("#!/bin/sh\n")
    executable.chmod(0o755)
    return subprocess.run(["systemd-analyze", "verify", f"--root={root}", f"/etc/systemd/system/{unit.name}"],
                          capture_output=True, text=True)


@pytest.mark.integration
@SYSTEMD_ANALYZE
@pytest.mark.parametrize("unit", UNITS, ids=lambda u: u.name)
def test_unit_passes_systemd_analyze_verify(unit, tmp_path):
    check = verify(unit, unit.read_text(), tmp_path)
    assert check.returncode == 0 and not check.stderr, check.stdout + check.stderr


@pytest.mark.integration
@SYSTEMD_ANALYZE
def test_verify_finds_a_misspelt_setting(tmp_path):
    unit = DEPLOY / "systemd" / "carcelery-worker-a.service"
    text = unit.read_text()
    assert "\nKillMode=" in text
    check = verify(unit, text.replace("\nKillMode=", "\nKilMode="), tmp_path)
    assert "Unknown key 'KilMode'" in check.stderr


# The units' command lines, as systemd runs them.

def service(unit: Path) -> dict[str, str]:
    parser = configparser.ConfigParser(interpolation=None, strict=False)
    parser.optionxform = str  # systemd's keys are case-sensitive
    parser.read(unit)
    return dict(parser["Service"])


def exec_start(unit: Path, env: dict[str, str] | None = None) -> list[str]:
    """The unit's ExecStart as systemd runs it: words, %% as %, ${NAME} from ``env``."""
    words = shlex.split(service(unit)["ExecStart"])
    assert not [w for w in words if re.search(r"%[^%]", w.replace("%%", ""))], "a specifier this test cannot fill in"
    return [re.sub(r"\$\{(\w+)\}", lambda m: env[m.group(1)], w.replace("%%", "%")) for w in words]


def test_units_share_one_environment_file_restart_on_failure_and_workers_stop_warm():
    services = {unit.stem: service(unit) for unit in UNITS}
    assert {(s["EnvironmentFile"], s["WorkingDirectory"], s["User"]) for s in services.values()} == {
        ("/etc/carcelery/carcelery.env", HOME, "carcelery")}
    assert {name for name, s in services.items() if s.get("Restart") == "on-failure"} == {
        name for name, s in services.items() if s["Type"] != "oneshot"}
    for name in ("carcelery-worker-a", "carcelery-worker-b"):
        # TERM to the main process only: Celery's warm shutdown, done before SQS hands the task on.
        worker = services[name]
        assert (worker["KillSignal"], worker["KillMode"]) == ("SIGTERM", "mixed")
        assert int(worker["TimeoutStopSec"]) < Settings().visibility_timeout


def environment(text: str) -> dict[str, str]:
    """A systemd EnvironmentFile's variables: KEY=VALUE lines, # comments; a later line wins."""
    env = {}
    for line in text.splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, _, value = line.partition("=")
            env[key.strip()] = value.strip()
    return env


def test_environment_file_the_user_data_writes_holds_the_stacks_settings():
    """deploy/carcelery.env with the lines the user data appends: settings carcelery accepts, the stack's."""
    stack = {"AWS::Region": "eu-west-1", "Bucket": "images", "Recognizer": "local", "NamePrefix": "x-",
             "ResultsTable": "x-results", "LedgerTable": "x-ledger", "RecordsTable": "x-records",
             "OutputUri": "s3://outputs/x/"}
    appended = user_data("InstanceA", **stack).split("<<'EOF'\n", 1)[1].split("\nEOF\n", 1)[0]
    config = Settings.from_env(environment((DEPLOY / "carcelery.env").read_text() + appended))
    assert (config.target, config.region, config.bucket, config.recognizer, config.queue_prefix,
            config.results_table, config.ledger_table, config.records_table, config.output_uri) == ("aws", *stack.values())
    assert config.output_dir == Path("/var/lib/carcelery/output")


def unit_stack(tmp_path, overrides: dict[str, str]) -> Stack:
    """Processes with the units' environment: deploy/carcelery.env with ``overrides`` appended, as
    the template appends its own, read as systemd reads it, and the variables systemd sets."""
    env_file = tmp_path / "carcelery.env"
    env_file.write_text((DEPLOY / "carcelery.env").read_text() + "".join(f"{k}={v}\n" for k, v in overrides.items()))
    state = tmp_path / "state"
    state.mkdir()
    systemd = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin", "HOME": str(state),
               "STATE_DIRECTORY": str(state)}
    return Stack(tmp_path / "logs", {**systemd, **environment(env_file.read_text())}, inherit=False)


def start_unit(stack: Stack, name: str, ready: str):
    unit = DEPLOY / "systemd" / f"{name}.service"
    settings = service(unit)
    assert (settings["WorkingDirectory"], settings["EnvironmentFile"]) == (HOME, "/etc/carcelery/carcelery.env")
    argv = exec_start(unit, stack.env)
    assert argv[0].startswith(f"{HOME}/")
    argv[0] = str(ROOT / argv[0][len(HOME) + 1:])  # this checkout instead of /opt/carcelery
    if settings["Type"] == "oneshot":
        return subprocess.run(argv, cwd=ROOT, env=stack.env, capture_output=True, text=True, timeout=300)
    return stack.start(name, argv[1:], ready, timeout=120, executable=argv[0])


def test_units_run_a_dispatch_then_the_beat_a_new_image(emulator, seed_dir, tmp_path):
    prefix = f"u{uuid.uuid4().hex[:8]}-"
    bucket = f"units-{uuid.uuid4().hex[:8]}"
    overrides = {"CARCELERY_TARGET": "emulator", "CARCELERY_EMULATOR_PORT": emulator.env["CARCELERY_EMULATOR_PORT"],
                 "CARCELERY_BUCKET": bucket, "CARCELERY_RECOGNIZER": "noop", "CARCELERY_QUEUE_PREFIX": prefix,
                 "CARCELERY_RESULTS_TABLE": f"{prefix}results", "CARCELERY_LEDGER_TABLE": f"{prefix}ledger",
                 "CARCELERY_RECORDS_TABLE": f"{prefix}records", "CARCELERY_OUTPUT_DIR": str(tmp_path / "output"), "CARCELERY_SCAN_INTERVAL": "1",
                 "CARCELERY_FLOWER_USER": USER, "CARCELERY_FLOWER_PASSWORD": PASSWORD,
                 "CARCELERY_FLOWER_PORT": str(free_port())}
    with unit_stack(tmp_path, overrides) as stack:
        assert stack.run("carcelery.aws.provision").returncode == 0
        s3 = aws.client("s3")
        for name in ("1.jpg", "2.jpg"):
            s3.put_object(Bucket=bucket, Key=name, Body=(seed_dir / name).read_bytes())
        start_unit(stack, "carcelery-worker-a", " ready.")
        start_unit(stack, "carcelery-worker-b", " ready.")
        start_unit(stack, "carcelery-flower", "Visit me at")
        done = start_unit(stack, "carcelery-dispatch", "")
        assert done.returncode == 0, done.stderr
        assert "2 images, 2 cars, 0 failed" in done.stdout
        assert {r["image"] for r in results.read_records(stack.output_dir)} == {"1.jpg", "2.jpg"}

        start_unit(stack, "carcelery-beat", "beat: Starting")
        s3.put_object(Bucket=bucket, Key="3.jpg", Body=(seed_dir / "3.jpg").read_bytes())
        wait_for(lambda: {r["image"] for r in results.read_records(stack.output_dir)} == {"1.jpg", "2.jpg", "3.jpg"})

        workers = wait_for(lambda: sorted(name.split("@")[0] for name in flower_get(stack, "/api/workers")),
                           lambda names: names == ["a", "b"])
        assert workers == ["a", "b"]
        with pytest.raises(urllib.error.HTTPError) as denied:
            urllib.request.urlopen(flower_url(stack, "/api/workers"), timeout=30)
        assert denied.value.code == 401
    assert list((tmp_path / "state").glob("celerybeat-schedule*")), "the beat's schedule is in its state directory"


# The template on the emulator's CloudFormation (moto).

def deploy(name: str, **parameters: str) -> tuple[dict[str, str], dict[str, str]]:
    """Create stack ``name``; its outputs and its resources' physical ids by logical id."""
    cfn = aws.client("cloudformation")
    cfn.create_stack(StackName=name, TemplateBody=TEMPLATE.read_text(), Capabilities=["CAPABILITY_IAM"],
                     Parameters=[{"ParameterKey": k, "ParameterValue": v} for k, v in {**REQUIRED, **parameters}.items()])
    cfn.get_waiter("stack_create_complete").wait(StackName=name, WaiterConfig={"Delay": 1, "MaxAttempts": 120})
    outputs = {o["OutputKey"]: o["OutputValue"] for o in cfn.describe_stacks(StackName=name)["Stacks"][0]["Outputs"]}
    # moto lists a resource left out by its condition too, with no id at all.
    return outputs, {r["LogicalResourceId"]: r["PhysicalResourceId"]
                     for r in cfn.describe_stack_resources(StackName=name)["StackResources"] if "LogicalResourceId" in r}


def role_policy(role: str) -> dict:
    document = aws.client("iam").get_role_policy(RoleName=role, PolicyName="carcelery")["PolicyDocument"]
    # moto answers with the document as Python writes a dict, not as JSON.
    return json.loads(document.replace("'", '"')) if isinstance(document, str) else document


def redrive(policy: str | None) -> dict | None:
    """A queue's redrive policy, its count as a number (SQS gives it as a string or a number)."""
    return policy and {**json.loads(policy), "maxReceiveCount": int(json.loads(policy)["maxReceiveCount"])}


def instance(instance_id: str) -> dict:
    ec2 = aws.client("ec2")
    found = ec2.describe_instances(InstanceIds=[instance_id])["Reservations"][0]["Instances"][0]
    data = ec2.describe_instance_attribute(InstanceId=instance_id, Attribute="userData")["UserData"]["Value"]
    return {**found, "UserData": base64.b64decode(data).decode()}


@pytest.fixture(scope="module")
def key_pair(emulator):
    aws.client("ec2").create_key_pair(KeyName=REQUIRED["KeyName"])


def test_stack_creates_everything_and_the_pipeline_runs_on_it(emulator, key_pair, bucket, seed_dir, tmp_path):
    prefix = f"s{uuid.uuid4().hex[:8]}-"
    uploads = f"s3://{bucket}/outputs/"
    outputs, resources = deploy(f"stack-{prefix[:-1]}", NamePrefix=prefix, Bucket=bucket, Recognizer="noop",
                                InstanceTypeA="t3.micro", InstanceTypeB="t3.large", OutputUri=uploads)
    sqs, dynamodb = aws.client("sqs"), aws.client("dynamodb")

    # Queues as provision makes them: names, encryption, visibility, redrive to the dead-letter queue.
    urls = {q: sqs.get_queue_url(QueueName=f"{prefix}{q}")["QueueUrl"] for q in (DETECT_QUEUE, TEXT_QUEUE, DEAD_LETTER_QUEUE)}
    assert {outputs["DetectQueueUrl"], outputs["TextQueueUrl"], outputs["DeadLetterQueueUrl"]} == {
        f"https://sqs.us-east-1.amazonaws.com/123456789012/{prefix}{q}" for q in urls}
    dead_arn = sqs.get_queue_attributes(QueueUrl=urls[DEAD_LETTER_QUEUE], AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    for queue, url in urls.items():
        got = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
        expected = Settings.from_env().queue_attributes(None if queue == DEAD_LETTER_QUEUE else dead_arn)
        assert redrive(got.pop("RedrivePolicy", None)) == redrive(expected.pop("RedrivePolicy", None))
        assert expected.items() <= got.items(), (queue, got)

    # Tables with provision's keys, named as the outputs say.
    keys = {outputs["ResultsTable"]: ["id"], outputs["LedgerTable"]: [ledger.KEY],
            outputs["RecordsTable"]: [records.HASH, records.RANGE]}
    assert sorted(keys) == [f"{prefix}ledger", f"{prefix}records", f"{prefix}results"]
    for table, key in keys.items():
        assert [k["AttributeName"] for k in dynamodb.describe_table(TableName=table)["Table"]["KeySchema"]] == key

    # The role: deploy/iam-policy.json for this bucket, prefix, region and account.
    assert role_policy(resources["Role"]) == policy_file(bucket, prefix, "us-east-1", "123456789012", uploads)
    profile = aws.client("iam").get_instance_profile(InstanceProfileName=resources["InstanceProfile"])["InstanceProfile"]
    assert [r["RoleName"] for r in profile["Roles"]] == [resources["Role"]]

    # SSH from SshCidr, nothing else.
    group = aws.client("ec2").describe_security_groups(GroupIds=[resources["SecurityGroup"]])["SecurityGroups"][0]
    assert [(p["IpProtocol"], p["FromPort"], p["ToPort"], [r["CidrIp"] for r in p["IpRanges"]])
            for p in group["IpPermissions"]] == [("tcp", 22, 22, [REQUIRED["SshCidr"]])]

    # Both instances: the AMI of the public SSM parameter, the types, key, profile and group given.
    ami = aws.client("ssm").get_parameter(Name=template()["Parameters"]["ImageId"]["Default"])["Parameter"]["Value"]
    for name, kind, role in (("InstanceA", "t3.micro", "a"), ("InstanceB", "t3.large", "b")):
        got = instance(resources[name])
        assert (got["ImageId"], got["InstanceType"], got["KeyName"]) == (ami, kind, REQUIRED["KeyName"])
        assert got["IamInstanceProfile"]["Arn"] == profile["Arn"]
        assert [g["GroupId"] for g in got["SecurityGroups"]] == [resources["SecurityGroup"]]
        assert f"/opt/carcelery/deploy/install.sh {role}\n" in got["UserData"]
        assert f"CARCELERY_QUEUE_PREFIX={prefix}\n" in got["UserData"] and f"CARCELERY_BUCKET={bucket}\n" in got["UserData"]
    assert outputs["OutputFile"].endswith(":/var/lib/carcelery/output/output.txt")
    assert outputs["Flower"].startswith("ssh -N -L 5555:127.0.0.1:5555 ec2-user@")

    # The pipeline on what the stack made, its settings from the outputs. Without monitoring
    # nothing makes transient queues: any queue or table other than the stack's would be a wrong name.
    settings = {"CARCELERY_QUEUE_PREFIX": outputs["QueuePrefix"], "CARCELERY_RESULTS_TABLE": outputs["ResultsTable"],
                "CARCELERY_LEDGER_TABLE": outputs["LedgerTable"], "CARCELERY_RECORDS_TABLE": outputs["RecordsTable"],
                "CARCELERY_RECOGNIZER": "noop",
                "CARCELERY_MONITORING": "off"}
    with Stack(tmp_path, settings) as stack:
        stack.start_worker("worker_a", DETECT_QUEUE, 1)
        stack.start_worker("worker_b", TEXT_QUEUE, 1)
        done = dispatch(stack, "--from", str(seed_dir), "--bucket", bucket)
        assert done.returncode == 0, done.stderr
        assert "10 images, 10 cars, 0 failed" in done.stdout
    assert sorted(sqs.list_queues(QueueNamePrefix=prefix)["QueueUrls"]) == sorted(urls.values())
    tables = [t for page in dynamodb.get_paginator("list_tables").paginate() for t in page["TableNames"]]
    assert sorted(t for t in tables if t.startswith(prefix)) == sorted(keys)
    assert dynamodb.scan(TableName=outputs["LedgerTable"], Select="COUNT")["Count"] == 10


def test_stack_with_an_existing_instance_profile_creates_no_role(emulator, key_pair):
    iam = aws.client("iam")
    existing = f"LabInstanceProfile-{uuid.uuid4().hex[:8]}"
    arn = iam.create_instance_profile(InstanceProfileName=existing)["InstanceProfile"]["Arn"]
    prefix = f"p{uuid.uuid4().hex[:8]}-"
    _, resources = deploy(f"stack-{prefix[:-1]}", NamePrefix=prefix, ExistingInstanceProfile=existing)
    assert "Role" not in resources and "InstanceProfile" not in resources
    for name in ("InstanceA", "InstanceB"):
        assert instance(resources[name])["IamInstanceProfile"]["Arn"] == arn
