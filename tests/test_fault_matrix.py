"""The fault matrix (bench/fault_matrix.py) against the code: each AWS call once, the fault kinds rotated.

What the user sees under each fault must be what docs/operations.md's table says;
``python -m bench.fault_matrix`` runs the whole matrix.
"""

import pytest

from bench.fault_matrix import CALLS, FAULTS, Matrix, documented, outcome
from carcelery.embedded import faults
from carcelery.embedded.demo import Stack

# Each call once, the fault kinds rotated; and a throttled receive, which left kombu's worker deaf to its queue.
SAMPLE = [(call, FAULTS[index % len(FAULTS)]) for index, call in enumerate(CALLS)] + [
    (next(call for call in CALLS if call.name == "sqs:ReceiveMessage"), "throttle")]


def test_the_documented_matrix_has_every_call_under_every_fault():
    cells = documented()
    assert {(call.name, fault) for call in CALLS for fault in FAULTS} == set(cells)
    assert all(cells.values()), "an empty cell: run python -m bench.fault_matrix --docs"


@pytest.mark.parametrize("environ, body, call", [
    ({"HTTP_X_AMZ_TARGET": "DynamoDB_20120810.TransactWriteItems"}, b"{}", "dynamodb:TransactWriteItems"),
    ({"HTTP_X_AMZ_TARGET": "AmazonSQS.ReceiveMessage"}, b"{}", "sqs:ReceiveMessage"),
    ({"REQUEST_METHOD": "GET", "PATH_INFO": "/b", "QUERY_STRING": "list-type=2&prefix="}, b"", "s3:ListObjectsV2"),
    ({"REQUEST_METHOD": "GET", "PATH_INFO": "/b/a/1.jpg"}, b"", "s3:GetObject"),
    ({"REQUEST_METHOD": "PUT", "PATH_INFO": "/b/out.txt"}, b"", "s3:PutObject"),
    ({"REQUEST_METHOD": "POST", "PATH_INFO": "/"}, b"Action=Publish&TopicArn=x", "sns:Publish"),
])
def test_the_fault_hook_names_each_call(environ, body, call):
    service = call.split(":")[0]
    signed = {"HTTP_AUTHORIZATION": f"AWS4-HMAC-SHA256 Credential=AKID/20260101/us-east-1/{service}/aws4_request, "
                                    "SignedHeaders=host, Signature=0", **environ}
    assert faults.call_of(signed, body) == call


@pytest.fixture(scope="module")
def matrix(emulator, tmp_path_factory):
    from conftest import Faults

    with Stack(tmp_path_factory.mktemp("fault-matrix")) as stack:
        yield Matrix(stack, Faults.path).start()


@pytest.mark.parametrize("call, fault", SAMPLE, ids=[f"{call.name}-{fault}" for call, fault in SAMPLE])
def test_what_the_user_sees_under_each_fault_is_the_documented_one(matrix, call, fault):
    seen = matrix.run(call, fault)
    assert outcome(seen) == documented()[call.name, fault], seen
    assert not seen.traceback, seen
    if fault == "denied" and seen.exit:
        # One line per thing that failed, naming the call and the missing permission.
        told = seen.errors + seen.failed
        if seen.stopped:  # a worker that stopped said why as it stopped, in its log
            told = [line for name in seen.stopped for line in matrix.stack.log(name).splitlines()
                    if "Unrecoverable error" in line][-1:]
        assert told and all(f"the credentials lack {call.name.split(':')[0]}:" in line for line in told), told
