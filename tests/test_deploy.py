"""deploy/: the CloudFormation template, the systemd units and the scripts, checked by their own tools
(cfn-lint, systemd-analyze, shellcheck) and run: the template on the emulator's CloudFormation, the
units' command lines against the emulator."""

import base64
import configparser
import fnmatch
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
from carcelery.settings import (DEAD_LETTER_QUEUE, DETECT_QUEUE, EVENTS_DEAD_LETTER_QUEUE, EVENTS_QUEUE, TEXT_QUEUE,
                                Settings)

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
    ``account``, and outputs uploaded to ``output`` (s3://bucket/prefix/; None: their statements left out)."""
    text = (DEPLOY / name).read_text()
    text = text.replace("arn:aws:s3:::BUCKET", f"arn:aws:s3:::{bucket}")
    if output:
        output_bucket, _, output_prefix = output.removeprefix("s3://").partition("/")
        text = text.replace("OUTPUT_BUCKET", output_bucket).replace("OUTPUT_PREFIX", output_prefix)
    policy = json.loads(re.sub(r":\*:\*:(table/)?carcelery-", lambda m: f":{region}:{account}:{m.group(1) or ''}{prefix}",
                               text))
    if output is None:
        policy["Statement"] = [s for s in policy["Statement"] if not s["Sid"].startswith("Outputs")]
    return policy


@pytest.mark.integration
def test_template_passes_cfn_lint():
    lint = subprocess.run([BIN / "cfn-lint", TEMPLATE], capture_output=True, text=True)
    assert lint.returncode == 0 and not lint.stderr, lint.stdout + lint.stderr


# checkov and parliament, in the virtualenv scripts/setup makes for them (requirements-iac.txt).
IAC_BIN = ROOT / ".venv-iac" / "bin"


def iac_tool(name: str, *args: str) -> subprocess.CompletedProcess:
    assert (IAC_BIN / name).exists(), f"{IAC_BIN / name} is missing: run scripts/setup"
    return subprocess.run([IAC_BIN / name, *args], capture_output=True, text=True, stdin=subprocess.DEVNULL, cwd=ROOT)


@pytest.mark.integration
def test_deploy_passes_checkov():
    """Every check passes; a check skipped says why in the template (its Metadata: checkov: skip)."""
    # --skip-download: offline, no guidelines fetched from checkov's platform.
    scan = iac_tool("checkov", "--directory", "deploy", "--skip-download", "--compact", "--output", "json")
    reports = json.loads(scan.stdout)
    reports = reports if isinstance(reports, list) else [reports]
    assert {r["check_type"] for r in reports} >= {"cloudformation"}
    failed = [f"{c['check_id']} {c['resource']}: {c['check_name']}" for r in reports
              for c in r["results"]["failed_checks"]]
    assert scan.returncode == 0 and not failed, "\n".join(failed) + scan.stderr
    skipped = [c for r in reports for c in r["results"]["skipped_checks"]]
    assert all(c["check_result"].get("suppress_comment") for c in skipped), skipped


@pytest.mark.integration
def test_iam_policies_pass_parliament():
    lint = iac_tool("parliament", "--files", "deploy/iam-policy.json,deploy/iam-provision-policy.json")
    assert lint.returncode == 0 and not lint.stdout and not lint.stderr, lint.stdout + lint.stderr


@pytest.mark.parametrize("output", [None, "s3://outputs/carcelery/"])
def test_template_role_has_the_policy_of_deploy_iam_policy_json(output):
    """None: OutputUri left empty, the outputs go to the bucket the stack makes."""
    role = template()["Resources"]["Role"]["Properties"]["Policies"]
    values = {"Bucket": "BUCKET", "NamePrefix": "carcelery-", "AWS::Partition": "aws", "AWS::Region": "*",
              "AWS::AccountId": "*", "OutputUri": output or "", "OwnOutputBucket": not output,
              "OutputBucket.Arn": "arn:aws:s3:::own-outputs"}
    assert [resolve(p["PolicyDocument"], values) for p in role] == [policy_file(output=output or "s3://own-outputs/")]


# Where each instance's properties are: Instance A's own, Instance B's group's launch template's.
LAUNCHED = {"InstanceA": lambda r: r["Properties"], "LaunchTemplateB": lambda r: r["Properties"]["LaunchTemplateData"]}


def user_data(instance: str, **values: str) -> str:
    """The user data of ``instance`` (a key of LAUNCHED), with ``values``, else the parameters' defaults,
    REQUIRED and sample names."""
    parameters = template()["Parameters"]
    values = {**{k: str(p["Default"]) for k, p in parameters.items() if "Default" in p}, **REQUIRED,
              "AWS::Region": "us-east-1", "AWS::StackName": "carcelery", "ResultsTable": "carcelery-results",
              "LedgerTable": "carcelery-ledger", "RecordsTable": "carcelery-records",
              "OutputBucket": "carcelery-outputbucket-1", **values}
    values["OwnOutputBucket"] = values["OutputUri"] == ""
    return resolve(LAUNCHED[instance](template()["Resources"][instance])["UserData"]["Fn::Base64"], values)


def test_user_data_of_a_and_b_differ_in_the_role_only():
    a = user_data("InstanceA")
    for old, new in (("Instance A", "Instance B"), ("install.sh a", "install.sh b"), ("InstanceA", "GroupB")):
        assert old in a
        a = a.replace(old, new)
    assert a == user_data("LaunchTemplateB")


@pytest.mark.integration
def test_user_data_and_install_script_pass_shellcheck(tmp_path):
    scripts = [DEPLOY / "install.sh"]
    for instance in LAUNCHED:
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
    assert {(s["EnvironmentFile"], s["WorkingDirectory"]) for s in services.values()} == {
        ("/etc/carcelery/carcelery.env", HOME)}
    # The drain stops worker B (systemctl): root; every other unit runs as carcelery.
    assert {name for name, s in services.items() if s.get("User") != "carcelery"} == {"carcelery-drain"}
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
             "VisibilityTimeout": "900", "MaxReceives": "3", "OutputUri": "s3://outputs/x/"}
    appended = user_data("InstanceA", **stack).split("<<'EOF'\n", 1)[1].split("\nEOF\n", 1)[0]
    config = Settings.from_env(environment((DEPLOY / "carcelery.env").read_text() + appended))
    assert (config.target, config.region, config.bucket, config.recognizer, config.queue_prefix,
            config.results_table, config.ledger_table, config.records_table, config.visibility_timeout,
            config.max_receives, config.output_uri) == ("aws", *list(stack.values())[:-3], 900, 3, "s3://outputs/x/")
    assert config.output_dir == Path("/var/lib/carcelery/output")


def test_template_queues_take_the_settings_defaults_and_limits_as_parameters():
    parameters, resources = template()["Parameters"], template()["Resources"]
    for name, default, low, high in (("VisibilityTimeout", Settings().visibility_timeout, 0, 43200),
                                     ("MaxReceives", Settings().max_receives, 1, 1000)):
        assert (parameters[name]["Default"], parameters[name]["MinValue"], parameters[name]["MaxValue"]) == (
            default, low, high)
    queues = [resources[q]["Properties"] for q in ("DeadLetterQueue", "DetectQueue", "TextQueue")]
    assert [q["VisibilityTimeout"] for q in queues] == [{"Ref": "VisibilityTimeout"}] * 3
    assert [q["RedrivePolicy"]["maxReceiveCount"] for q in queues[1:]] == [{"Ref": "MaxReceives"}] * 2


def test_template_queues_are_encrypted_at_rest_as_provision_makes_them():
    # Checked here, in the template: the emulator encrypts every queue, asked or not.
    assert Settings().queue_attributes(None)["SqsManagedSseEnabled"] == "true"
    queues = {name: r["Properties"] for name, r in template()["Resources"].items() if r["Type"] == "AWS::SQS::Queue"}
    assert sorted(queues) == ["DeadLetterQueue", "DetectQueue", "EventsDeadLetterQueue", "EventsQueue", "TextQueue"]
    assert {name: q.get("SqsManagedSseEnabled") for name, q in queues.items()} == dict.fromkeys(queues, True)


def test_the_dispatch_unit_waits_as_long_as_the_dispatcher_does():
    # One limit: the dispatcher's --timeout (it says why, exit code 3); systemd would kill it without a word.
    unit = DEPLOY / "systemd" / "carcelery-dispatch.service"
    words = exec_start(unit)
    assert "--wait" in words and "--timeout" in words
    assert float(words[words.index("--timeout") + 1]) >= 3600
    assert service(unit)["TimeoutStartSec"] == "infinity"


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


def group_instances(name: str) -> dict:
    """Auto Scaling group ``name``: sizes, launch template and instances."""
    return aws.client("autoscaling").describe_auto_scaling_groups(AutoScalingGroupNames=[name])["AutoScalingGroups"][0]


def launch_template(template_id: str) -> dict:
    """The latest version's data of launch template ``template_id``."""
    return aws.client("ec2").describe_launch_template_versions(LaunchTemplateId=template_id, Versions=["$Latest"])[
        "LaunchTemplateVersions"][0]["LaunchTemplateData"]


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

    # Instance A, and Instance B's group at its minimum (1 by default), its instances from
    # its launch template: the AMI of the public SSM parameter, the types, key, profile and group given.
    ami = aws.client("ssm").get_parameter(Name=template()["Parameters"]["ImageId"]["Default"])["Parameter"]["Value"]
    group_b = group_instances(outputs["GroupB"])
    assert (group_b["MinSize"], group_b["MaxSize"], len(group_b["Instances"])) == (1, 4, 1)
    assert group_b["AutoScalingGroupName"] == resources["GroupB"] == f"{prefix}b"
    assert group_b["LaunchTemplate"]["LaunchTemplateId"] == resources["LaunchTemplateB"]
    for name, kind, role in (("InstanceA", "t3.micro", "a"), (group_b["Instances"][0]["InstanceId"], "t3.large", "b")):
        got = instance(resources.get(name, name))
        assert (got["ImageId"], got["InstanceType"], got["KeyName"]) == (ami, kind, REQUIRED["KeyName"])
        if name == "InstanceA":
            assert got["IamInstanceProfile"]["Arn"] == profile["Arn"]
        else:  # moto does not give its group's instances the launch template's profile: the template has it
            assert launch_template(resources["LaunchTemplateB"])["IamInstanceProfile"] == {"Name": profile["InstanceProfileName"]}
        assert [g["GroupId"] for g in got["SecurityGroups"]] == [resources["SecurityGroup"]]
        assert f"/opt/carcelery/deploy/install.sh {role}\n" in got["UserData"]
        assert f"CARCELERY_QUEUE_PREFIX={prefix}\n" in got["UserData"] and f"CARCELERY_BUCKET={bucket}\n" in got["UserData"]
        assert f"CARCELERY_OUTPUT_URI={outputs['OutputUri']}\n" in got["UserData"]
    assert outputs["OutputUri"] == uploads  # given; left empty, the bucket the stack makes (the group's test)
    assert outputs["Flower"].startswith("ssh -N -L 5555:127.0.0.1:5555 ec2-user@")

    # The pipeline on what the stack made, its settings from the outputs. Without monitoring
    # nothing makes transient queues: any queue or table other than the stack's would be a wrong name.
    settings = {"CARCELERY_QUEUE_PREFIX": outputs["QueuePrefix"], "CARCELERY_RESULTS_TABLE": outputs["ResultsTable"],
                "CARCELERY_LEDGER_TABLE": outputs["LedgerTable"], "CARCELERY_RECORDS_TABLE": outputs["RecordsTable"],
                "CARCELERY_OUTPUT_URI": outputs["OutputUri"], "CARCELERY_RECOGNIZER": "noop",
                "CARCELERY_MONITORING": "off"}
    with Stack(tmp_path, settings) as stack:
        stack.start_worker("worker_a", DETECT_QUEUE, 1)
        stack.start_worker("worker_b", TEXT_QUEUE, 1)
        done = dispatch(stack, "--from", str(seed_dir), "--bucket", bucket)
        assert done.returncode == 0, done.stderr
        assert "10 images, 10 cars, 0 failed" in done.stdout
        # Where every host and user can read it, and the summary says so.
        assert f"uploaded to {outputs['OutputUri']}runs/" in done.stdout
    output = aws.client("s3").get_object(Bucket=bucket, Key="outputs/latest/output.txt")["Body"].read()
    assert output == (stack.output_dir / "output.txt").read_bytes() and output.count(b"\n") == 10
    assert sorted(sqs.list_queues(QueueNamePrefix=prefix)["QueueUrls"]) == sorted(urls.values())
    tables = [t for page in dynamodb.get_paginator("list_tables").paginate() for t in page["TableNames"]]
    assert sorted(t for t in tables if t.startswith(prefix)) == sorted(keys)
    # One item per image (the outputs' index is in S3; a run's item only when its listing passed something over).
    assert dynamodb.scan(TableName=outputs["LedgerTable"], Select="COUNT")["Count"] == 10


def test_stack_makes_a_bucket_whose_events_reach_the_events_queue(emulator, key_pair):
    prefix, made = f"e{uuid.uuid4().hex[:8]}-", f"events-{uuid.uuid4().hex[:12]}"
    outputs, resources = deploy(f"stack-{prefix[:-1]}", NamePrefix=prefix, Bucket=made, MakeBucket="true")
    sqs, s3 = aws.client("sqs"), aws.client("s3")
    url = sqs.get_queue_url(QueueName=f"{prefix}{EVENTS_QUEUE}")["QueueUrl"]
    assert outputs["EventsQueueUrl"].endswith(f"/{prefix}{EVENTS_QUEUE}") and resources["ImagesBucket"] == made
    got = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
    assert got["MaximumMessageSize"] == "262144"  # encryption: the template's (the emulator encrypts every queue)
    assert json.loads(got["RedrivePolicy"])["deadLetterTargetArn"].endswith(f":{prefix}{EVENTS_DEAD_LETTER_QUEUE}")
    # The queue's policy: moto makes no AWS::SQS::QueuePolicy (test_template_events_policy_is_provisions).
    notified = s3.get_bucket_notification_configuration(Bucket=made)["QueueConfigurations"]
    assert sorted(e for n in notified for e in n["Events"]) == ["s3:ObjectCreated:*", "s3:ObjectRemoved:*"]
    assert {n["QueueArn"] for n in notified} == {got["QueueArn"]}
    s3.put_object(Bucket=made, Key="my car.jpg", Body=b"x")
    bodies = [json.loads(m["Body"]) for m in sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10,
                                                                    WaitTimeSeconds=1).get("Messages", [])]
    assert any(r["s3"]["object"]["key"] == "my+car.jpg" for b in bodies for r in b.get("Records", []))


def test_template_events_policy_is_provisions():
    policy = template()["Resources"]["EventsQueuePolicy"]["Properties"]["PolicyDocument"]
    values = {"Bucket": "photos", "AWS::Partition": "aws"}
    made = provision.events_policy({"Fn::GetAtt": ["EventsQueue", "Arn"]}, "photos", {"Ref": "AWS::AccountId"})
    assert resolve(policy, values) == made


def test_stack_without_make_bucket_makes_no_events_queue():
    resources = template()["Resources"]
    made = [name for name, r in resources.items() if r.get("Condition") == "MakeBucket"]
    assert sorted(made) == ["EventsDeadLetterQueue", "EventsQueue", "EventsQueuePolicy", "ImagesBucket"]
    assert template()["Parameters"]["MakeBucket"]["Default"] == "false"


def test_stack_with_an_existing_instance_profile_creates_no_role(emulator, key_pair):
    iam = aws.client("iam")
    existing = f"LabInstanceProfile-{uuid.uuid4().hex[:8]}"
    arn = iam.create_instance_profile(InstanceProfileName=existing)["InstanceProfile"]["Arn"]
    prefix = f"p{uuid.uuid4().hex[:8]}-"
    _, resources = deploy(f"stack-{prefix[:-1]}", NamePrefix=prefix, ExistingInstanceProfile=existing)
    assert "Role" not in resources and "InstanceProfile" not in resources and "InstancePolicyB" not in resources
    assert instance(resources["InstanceA"])["IamInstanceProfile"]["Arn"] == arn
    assert launch_template(resources["LaunchTemplateB"])["IamInstanceProfile"] == {"Name": existing}


def evaluate(node, refs: dict, conditions: dict):
    """``node`` of the template, its functions evaluated: Ref, Fn::GetAtt (``refs``, "Name.Attribute"),
    Fn::Sub, Fn::If (``conditions``), Fn::FindInMap (the template's Mappings)."""
    if isinstance(node, list):
        return [evaluate(v, refs, conditions) for v in node]
    if not isinstance(node, dict):
        return node
    if list(node) == ["Ref"]:
        return refs[node["Ref"]]
    if list(node) == ["Fn::GetAtt"]:
        return refs[".".join(node["Fn::GetAtt"])]
    if list(node) == ["Fn::Sub"]:
        return resolve(node, refs)
    if list(node) == ["Fn::If"]:
        condition, then, otherwise = node["Fn::If"]
        return evaluate(then if conditions[condition] else otherwise, refs, conditions)
    if list(node) == ["Fn::FindInMap"]:
        mapping, key, field = evaluate(node["Fn::FindInMap"], refs, conditions)
        return template()["Mappings"][mapping][key][field]
    return {k: evaluate(v, refs, conditions) for k, v in node.items()}


@pytest.mark.parametrize("recognizer, backlog, target", [("local", "0", 3400), ("rekognition", "0", 22500),
                                                          ("local", "250", 250)])
def test_scaling_targets_the_recognizers_backlog_or_the_one_given(recognizer, backlog, target):
    policy = template()["Resources"]["ScalingPolicyB"]["Properties"]
    refs = {"GroupB": "carcelery-b", "TextQueue.QueueName": "carcelery-text", "Recognizer": recognizer,
            "BacklogPerInstanceB": backlog}
    got = evaluate(policy, refs, {"DefaultBacklogB": backlog == "0"})["TargetTrackingConfiguration"]
    assert float(got["TargetValue"]) == target


def test_group_scaling_policy_drain_hook_and_their_permissions_on_the_emulator(emulator, key_pair):
    """What moto's CloudFormation makes of Instance B's group (the launch template, the group, the
    instances' policy), and what it skips (AWS::AutoScaling::ScalingPolicy and ::LifecycleHook):
    those are made here with the template's properties, through the Auto Scaling API, whose model
    (botocore) refuses a property it does not know."""
    prefix = f"g{uuid.uuid4().hex[:8]}-"
    outputs, resources = deploy(f"stack-{prefix[:-1]}", NamePrefix=prefix, Recognizer="local", MaxInstancesB="3")
    autoscaling = aws.client("autoscaling")
    group = group_instances(outputs["GroupB"])
    assert (group["MinSize"], group["MaxSize"]) == (1, 3)
    assert outputs["OutputUri"] == f"s3://{resources['OutputBucket']}/"

    parts = template()["Resources"]
    refs = {"GroupB": group["AutoScalingGroupName"], "TextQueue.QueueName": f"{prefix}text", "Recognizer": "local",
            "BacklogPerInstanceB": "0", "NamePrefix": prefix, "AWS::Partition": "aws", "AWS::Region": "us-east-1",
            "AWS::AccountId": "123456789012", "OutputBucket.Arn": f"arn:aws:s3:::{resources['OutputBucket']}"}
    policy = evaluate(parts["ScalingPolicyB"]["Properties"], refs, {"DefaultBacklogB": True})
    autoscaling.put_scaling_policy(PolicyName="ScalingPolicyB", **policy)
    tracking = autoscaling.describe_policies(AutoScalingGroupName=refs["GroupB"])["ScalingPolicies"][0][
        "TargetTrackingConfiguration"]
    queries = {q["Id"]: q for q in tracking["CustomizedMetricSpecification"]["Metrics"]}
    # The text queue's messages, waiting and in flight, per instance in service of this group.
    assert [q["Expression"] for q in queries.values() if q.get("ReturnData")] == ["(waiting + inflight) / instances"]
    assert {(i, q["MetricStat"]["Metric"]["MetricName"], q["MetricStat"]["Metric"]["Dimensions"][0]["Value"])
            for i, q in queries.items() if "MetricStat" in q} == {
        ("waiting", "ApproximateNumberOfMessagesVisible", f"{prefix}text"),
        ("inflight", "ApproximateNumberOfMessagesNotVisible", f"{prefix}text"),
        ("instances", "GroupInServiceInstances", refs["GroupB"])}

    hook = evaluate(parts["DrainHookB"]["Properties"], refs, {})
    autoscaling.put_lifecycle_hook(**hook)
    [got] = autoscaling.describe_lifecycle_hooks(AutoScalingGroupName=refs["GroupB"])["LifecycleHooks"]
    assert (got["LifecycleTransition"], got["DefaultResult"]) == ("autoscaling:EC2_INSTANCE_TERMINATING", "CONTINUE")
    # Long enough for worker B's warm stop, and no longer than SQS keeps its messages hidden.
    stop = int(service(DEPLOY / "systemd" / "carcelery-worker-b.service")["TimeoutStopSec"])
    assert stop < got["HeartbeatTimeout"] <= Settings().visibility_timeout

    # The role uploads to the output bucket; the instances' own policy completes this group's hook.
    uploads = {s["Sid"]: s for s in role_policy(resources["Role"])["Statement"]}["Outputs"]
    assert uploads["Resource"] == f"arn:aws:s3:::{resources['OutputBucket']}/*"
    document = aws.client("iam").get_role_policy(RoleName=resources["Role"], PolicyName="carcelery-b")["PolicyDocument"]
    statements = {s["Sid"]: s for s in (json.loads(document.replace("'", '"')) if isinstance(document, str)
                                        else document)["Statement"]}
    assert statements["Lifecycle"]["Action"] == ["autoscaling:CompleteLifecycleAction"]
    assert fnmatch.fnmatchcase(group["AutoScalingGroupARN"], statements["Lifecycle"]["Resource"])
