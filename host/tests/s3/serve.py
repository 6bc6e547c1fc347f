#!/usr/bin/env python3
"""A real S3-compatible server for the tests: moto's, on 127.0.0.1, checking signatures.

Starts moto with authentication on, makes an IAM user with full S3 access and its key,
creates the buckets named on the command line, then prints one JSON line
{"port": ..., "access_key_id": ..., "secret_access_key": ...} on stdout and serves until
killed (or until stdin closes, so a test that dies takes its server with it).

    python3 serve.py [--port P] BUCKET...
"""
import argparse
import json
import os
import sys
import threading

# The first requests (the bootstrap below) go unchecked; every later one is verified
# against the IAM keys made here: a wrong secret gets 403 SignatureDoesNotMatch.
BOOTSTRAP_REQUESTS = 3
os.environ["INITIAL_NO_AUTH_ACTION_COUNT"] = str(BOOTSTRAP_REQUESTS)

import boto3  # noqa: E402
from moto.server import ThreadedMotoServer  # noqa: E402

POLICY = {
    "Version": "2012-10-17",
    "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}],
}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("buckets", nargs="*")
    args = parser.parse_args()

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=args.port, verbose=False)
    server.start()
    port = server._server.server_port
    endpoint = f"http://127.0.0.1:{port}"

    boot = dict(
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id="bootstrap",
        aws_secret_access_key="bootstrap",
    )
    iam = boto3.client("iam", **boot)
    iam.create_user(UserName="sedna")
    key = iam.create_access_key(UserName="sedna")["AccessKey"]
    iam.put_user_policy(
        UserName="sedna", PolicyName="s3", PolicyDocument=json.dumps(POLICY)
    )
    s3 = boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id=key["AccessKeyId"],
        aws_secret_access_key=key["SecretAccessKey"],
    )
    for bucket in args.buckets:
        s3.create_bucket(Bucket=bucket)

    print(
        json.dumps(
            {
                "port": port,
                "access_key_id": key["AccessKeyId"],
                "secret_access_key": key["SecretAccessKey"],
            }
        ),
        flush=True,
    )
    done = threading.Event()
    threading.Thread(target=lambda: (sys.stdin.read(), done.set()), daemon=True).start()
    done.wait()
    server.stop()


if __name__ == "__main__":
    main()
