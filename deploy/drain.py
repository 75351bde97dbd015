"""Scale-in that loses nothing: stop this Instance B's worker warm before its Auto Scaling group lets it go.

Run as root by ``carcelery-drain.service`` on every instance of Instance B's group
(deploy/systemd/). It asks the instance metadata service (IMDSv2) for the
instance's target lifecycle state every few seconds. When the group takes the
instance away, the state becomes ``Terminated`` while the lifecycle hook holds
the instance in Terminating:Wait; then it

1. stops ``carcelery-worker-b`` (``systemctl stop``: Celery's warm shutdown; the
   worker takes no more messages, finishes the tasks it runs, and its messages
   not started become visible again for the other instances; systemd waits up
   to the unit's TimeoutStopSec, within the queue's visibility timeout);
2. completes the lifecycle action (CONTINUE): the instance goes.

    /opt/carcelery/.venv/bin/python /opt/carcelery/deploy/drain.py [--every SECONDS]

The group and the hook are found from the instance (DescribeAutoScalingInstances,
DescribeLifecycleHooks): nothing to configure. The metadata service is at
``AWS_EC2_METADATA_SERVICE_ENDPOINT`` (botocore's setting), else 169.254.169.254.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request

from carcelery import aws

WORKER = "carcelery-worker-b"
TERMINATING = "autoscaling:EC2_INSTANCE_TERMINATING"


class Metadata:
    """The instance metadata service, IMDSv2: a session token, then GETs with it."""

    def __init__(self, endpoint: str | None = None):
        self.endpoint = (endpoint or os.environ.get("AWS_EC2_METADATA_SERVICE_ENDPOINT")
                         or "http://169.254.169.254").rstrip("/")
        self.token, self.expires = "", 0.0

    def get(self, path: str) -> str | None:
        """``/latest/meta-data/PATH``'s text; None if the service has none (404: not yet in a group).

        Raises:
          urllib.error.URLError: the service is not reachable (not an EC2 instance, or IMDS turned off).
        """
        if time.monotonic() > self.expires:
            request = urllib.request.Request(f"{self.endpoint}/latest/api/token", method="PUT",
                                             headers={"X-aws-ec2-metadata-token-ttl-seconds": "21600"})
            with urllib.request.urlopen(request, timeout=5) as answer:
                self.token, self.expires = answer.read().decode(), time.monotonic() + 21000
        request = urllib.request.Request(f"{self.endpoint}/latest/meta-data/{path}",
                                         headers={"X-aws-ec2-metadata-token": self.token})
        try:
            with urllib.request.urlopen(request, timeout=5) as answer:
                return answer.read().decode().strip()
        except urllib.error.HTTPError as exc:
            if exc.code == 404:
                return None
            raise


def wait_for_termination(metadata: Metadata, every: float) -> None:
    """Return once the instance's target lifecycle state is ``Terminated``."""
    while metadata.get("autoscaling/target-lifecycle-state") != "Terminated":
        time.sleep(every)


def complete(instance_id: str) -> str:
    """Complete the group's termination hook for ``instance_id`` with CONTINUE; the group's name.

    Raises:
      LookupError: the instance is in no Auto Scaling group, or its group has no termination hook.
    """
    client = aws.client("autoscaling")
    found = client.describe_auto_scaling_instances(InstanceIds=[instance_id])["AutoScalingInstances"]
    if not found:
        raise LookupError(f"instance {instance_id} is in no Auto Scaling group")
    group = found[0]["AutoScalingGroupName"]
    hooks = [hook["LifecycleHookName"] for hook in
             client.describe_lifecycle_hooks(AutoScalingGroupName=group)["LifecycleHooks"]
             if hook["LifecycleTransition"] == TERMINATING]
    if not hooks:
        raise LookupError(f"group {group} has no {TERMINATING} lifecycle hook (the template's DrainHookB)")
    for hook in hooks:
        client.complete_lifecycle_action(AutoScalingGroupName=group, LifecycleHookName=hook,
                                         InstanceId=instance_id, LifecycleActionResult="CONTINUE")
    return group


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="deploy/drain.py", description=__doc__.split("\n")[0])
    parser.add_argument("--every", type=float, default=5.0, help="seconds between looks (default 5)")
    args = parser.parse_args(argv)
    metadata = Metadata()
    try:
        instance_id = metadata.get("instance-id")
        if instance_id is None:
            print(f"error: the instance metadata at {metadata.endpoint} has no instance-id", file=sys.stderr)
            return 2
        wait_for_termination(metadata, args.every)
    except urllib.error.URLError as exc:
        print(f"error: no instance metadata at {metadata.endpoint} ({exc.reason}); "
              "run this on an EC2 instance with IMDS enabled", file=sys.stderr)
        return 2
    print(f"{instance_id} is being taken away: stopping {WORKER} (warm)", flush=True)
    subprocess.run(["systemctl", "stop", WORKER], check=False)
    try:
        group = complete(instance_id)
    except LookupError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"{WORKER} stopped; lifecycle action of {instance_id} in {group} completed", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
