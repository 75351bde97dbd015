"""deploy/drain.py: at scale-in, worker B stopped warm, then the lifecycle action completed.

Run as the unit runs it, against a stand-in for the instance metadata service (IMDSv2) and an
Auto Scaling group on the emulator, with ``systemctl`` a stand-in that writes down what it is asked.
moto has no CompleteLifecycleAction: the stand-in server answers that call itself, and records it.
The stand-in asserts what it is asked in its own threads; ``Server.check`` raises what failed there
in the test's thread.
"""

import http.server
import os
import subprocess
import sys
import threading
import urllib.parse
import urllib.request
import uuid

import pytest
from test_deploy import DEPLOY, evaluate, template

from carcelery import aws
from carcelery.embedded.demo import ROOT
from carcelery.settings import settings

TOKEN = "imds-token"
COMPLETED = (b'<CompleteLifecycleActionResponse xmlns="http://autoscaling.amazonaws.com/doc/2011-01-01/">'
             b"<CompleteLifecycleActionResult/><ResponseMetadata><RequestId>1</RequestId></ResponseMetadata>"
             b"</CompleteLifecycleActionResponse>")


class Instance(http.server.BaseHTTPRequestHandler):
    """IMDSv2 of one instance (``server.instance_id``), InService for three looks, then Terminated; and
    the Auto Scaling API: CompleteLifecycleAction recorded here, every other call passed on to the emulator."""

    def log_message(self, *args):
        pass

    def reply(self, status: int, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_PUT(self):
        assert self.path == "/latest/api/token" and self.headers["X-aws-ec2-metadata-token-ttl-seconds"]
        self.reply(200, TOKEN.encode())

    def do_GET(self):
        if self.headers.get("X-aws-ec2-metadata-token") != TOKEN:
            return self.reply(401, b"")
        if self.path == "/latest/meta-data/instance-id":
            return self.reply(200, self.server.instance_id.encode())
        assert self.path == "/latest/meta-data/autoscaling/target-lifecycle-state"
        self.server.looks += 1
        self.reply(200, b"Terminated" if self.server.looks > 3 else b"InService")

    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        form = dict(urllib.parse.parse_qsl(body.decode()))
        if form.get("Action") == "CompleteLifecycleAction":
            self.server.completed.append({**form, "stopped_before": self.server.systemctl.read_text()})
            return self.reply(200, COMPLETED)
        request = urllib.request.Request(f"{settings.endpoint_url}{self.path}", data=body, method="POST",
                                         headers={k: v for k, v in self.headers.items() if k.lower() != "host"})
        with urllib.request.urlopen(request, timeout=30) as answer:
            self.reply(answer.status, answer.read())


@pytest.fixture
def instance_in_a_group(emulator):
    """An instance of a new Auto Scaling group with the template's termination hook: (group, instance id)."""
    ec2, autoscaling = aws.client("ec2"), aws.client("autoscaling")
    ami = aws.client("ssm").get_parameter(Name=template()["Parameters"]["ImageId"]["Default"])["Parameter"]["Value"]
    launch = ec2.create_launch_template(LaunchTemplateName=f"lt-{uuid.uuid4().hex[:8]}",
                                        LaunchTemplateData={"ImageId": ami, "InstanceType": "t3.micro"})
    group = f"g{uuid.uuid4().hex[:8]}-b"
    autoscaling.create_auto_scaling_group(
        AutoScalingGroupName=group, MinSize=1, MaxSize=1, AvailabilityZones=["us-east-1a"],
        LaunchTemplate={"LaunchTemplateId": launch["LaunchTemplate"]["LaunchTemplateId"], "Version": "$Latest"})
    autoscaling.put_lifecycle_hook(**evaluate(template()["Resources"]["DrainHookB"]["Properties"], {"GroupB": group}, {}))
    instances = autoscaling.describe_auto_scaling_groups(AutoScalingGroupNames=[group])["AutoScalingGroups"][0]["Instances"]
    return group, instances[0]["InstanceId"]


class Server(http.server.ThreadingHTTPServer):
    """The stand-in (``Instance``), whose handlers' failures (an assert) are kept, for ``check``.

    socketserver runs each request in a thread of its own and only prints what fails there: the
    test, in the main thread, would pass regardless.
    """

    def __init__(self):
        super().__init__(("127.0.0.1", 0), Instance)
        self.failures: list[BaseException] = []

    def handle_error(self, request, client_address) -> None:
        self.failures.append(sys.exc_info()[1])  # called in the handler's except block
        super().handle_error(request, client_address)

    def check(self) -> None:
        """Raise, in the caller's thread, the first failure of a request's handler since the last check."""
        failures, self.failures = self.failures, []
        if failures:
            raise AssertionError(f"the stand-in server failed {len(failures)} request(s)") from failures[0]


def drain(server: Server, tmp_path, endpoint: str) -> subprocess.CompletedProcess:
    """deploy/drain.py as its unit runs it, the metadata service and Auto Scaling at ``endpoint``."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "systemctl").write_text(f'#!/bin/sh\necho "$@" >> {server.systemctl}\n')
    (bin_dir / "systemctl").chmod(0o755)
    port = endpoint.rsplit(":", 1)[1]
    env = {**os.environ, "PATH": f"{bin_dir}:/usr/bin:/bin", "AWS_EC2_METADATA_SERVICE_ENDPOINT": endpoint,
           "CARCELERY_EMULATOR_PORT": port}
    done = subprocess.run([sys.executable, str(DEPLOY / "drain.py"), "--every", "0.05"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=60, check=False)
    server.check()
    return done


@pytest.fixture
def server(tmp_path):
    server = Server()
    server.looks, server.completed, server.systemctl = 0, [], tmp_path / "systemctl.log"
    server.systemctl.write_text("")
    thread = threading.Thread(target=server.serve_forever)
    thread.start()
    yield server
    server.shutdown()
    thread.join()
    server.check()


def test_a_failure_in_the_stand_ins_thread_fails_the_test(server):
    request = urllib.request.Request(f"http://127.0.0.1:{server.server_address[1]}/not/the/token", method="PUT")
    with pytest.raises(OSError):  # the handler failed: no answer
        urllib.request.urlopen(request, timeout=5)
    with pytest.raises(AssertionError, match="failed 1 request") as raised:
        server.check()
    assert isinstance(raised.value.__cause__, AssertionError)


def test_drain_stops_worker_b_when_terminated_then_completes_the_hook(instance_in_a_group, server, tmp_path):
    group, server.instance_id = instance_in_a_group
    done = drain(server, tmp_path, f"http://127.0.0.1:{server.server_address[1]}")
    assert done.returncode == 0, done.stdout + done.stderr
    assert server.looks == 4, "it stopped before the state was Terminated, or looked on after"
    assert server.systemctl.read_text() == "stop carcelery-worker-b\n"
    [completed] = server.completed
    assert completed == {"Action": "CompleteLifecycleAction", "Version": "2011-01-01", "AutoScalingGroupName": group,
                         "LifecycleHookName": "drain", "InstanceId": server.instance_id,
                         "LifecycleActionResult": "CONTINUE", "stopped_before": "stop carcelery-worker-b\n"}
    assert f"lifecycle action of {server.instance_id} in {group} completed" in done.stdout


def test_drain_off_ec2_says_so_and_exits_2(emulator, server, tmp_path, port):
    done = drain(server, tmp_path, f"http://127.0.0.1:{port}")  # nothing listens there
    assert done.returncode == 2
    assert f"error: no instance metadata at http://127.0.0.1:{port}" in done.stderr
    assert server.systemctl.read_text() == ""
