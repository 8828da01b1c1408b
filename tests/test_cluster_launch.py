"""cluster.yaml against an AWS emulator (moto's EC2 and IAM on loopback): rnn_models/aws.py creates the roles,
instance profiles and security group, and Ray's own launcher code bootstraps the config and starts nodes."""

import copy
import json
import subprocess
import sys
import urllib.request

import boto3
import botocore.exceptions
import pytest
import yaml
from moto.iam.access_control import IAMPolicy, PermissionResult
from ray.autoscaler._private.aws import config as ray_aws_config
from ray.autoscaler._private.aws import utils as ray_aws_utils
from ray.autoscaler._private.aws.node_provider import AWSNodeProvider
from ray.autoscaler._private.util import prepare_config

from conftest import REPO, free_port, wait_for
from rnn_models import aws

REGION = "us-west-2"
BUCKET = "rnn-models-runs"
SSH_CIDR = "203.0.113.0/24"


def _clear_ray_boto_caches():
    # Ray caches boto3 clients per region: drop any made before (or for) this emulator.
    for cached in (ray_aws_utils.resource_cache, ray_aws_utils.client_cache, ray_aws_config._get_subnets_or_die):
        cached.cache_clear()


def _moto_up(endpoint, proc):
    assert proc.poll() is None, f"moto.server exited with {proc.returncode}"
    try:
        return urllib.request.urlopen(f"{endpoint}/moto-api/", timeout=1).status == 200
    except OSError:
        return False


@pytest.fixture(scope="module")
def emulator(tmp_path_factory):
    """moto's server on a free loopback port; boto3 (ours and Ray's) pointed at it, HOME in a temporary folder
    (Ray's bootstrap writes its SSH key under ~/.ssh)."""
    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
    with pytest.MonkeyPatch.context() as mp:
        for name, value in {"AWS_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": "testing",
                            "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": REGION,
                            "AWS_EC2_METADATA_DISABLED": "true", "HOME": str(tmp_path_factory.mktemp("home"))}.items():
            mp.setenv(name, value)
        for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_CONFIG_FILE", "AWS_SHARED_CREDENTIALS_FILE"):
            mp.delenv(name, raising=False)
        _clear_ray_boto_caches()
        try:
            wait_for(lambda: _moto_up(endpoint, proc), 30, f"moto at {endpoint}")
            yield endpoint
        finally:
            _clear_ray_boto_caches()
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)


@pytest.fixture(scope="module")
def created(emulator):
    return aws.set_up(REGION, BUCKET, SSH_CIDR)


def _with(created) -> dict:
    """cluster.yaml with the values jobs/aws_setup.py prints filled in."""
    cluster = yaml.safe_load((REPO / "cluster.yaml").read_text())
    profiles = {"head": created.head_profile, "gpu_1": created.worker_profile}
    for name, node_type in cluster["available_node_types"].items():
        node_type["node_config"]["SecurityGroupIds"] = [created.security_group_id]
        assert node_type["node_config"]["IamInstanceProfile"] == {"Name": profiles[name]}
    return cluster


@pytest.fixture(scope="module")
def bootstrapped(created):
    return ray_aws_config.bootstrap_aws(prepare_config(_with(created)))


def test_ray_bootstraps_the_cluster_yaml(bootstrapped, created):
    types = bootstrapped["available_node_types"]
    assert {name: t["node_config"]["SecurityGroupIds"] for name, t in types.items()} == {
        "head": [created.security_group_id], "gpu_1": [created.security_group_id]}
    assert types["head"]["node_config"]["IamInstanceProfile"] == {"Name": "rnn-models-head"}
    assert types["gpu_1"]["node_config"]["IamInstanceProfile"] == {"Name": "rnn-models-worker"}
    # Ray passes the SSM reference through (it replaces only an empty ImageId or "latest_dlami").
    assert all(t["node_config"]["ImageId"].startswith("resolve:ssm:/aws/service/deeplearning/") for t in types.values())
    subnets = boto3.client("ec2").describe_subnets(SubnetIds=types["gpu_1"]["node_config"]["SubnetIds"])["Subnets"]
    assert {s["AvailabilityZone"] for s in subnets} <= {"us-west-2a", "us-west-2b"}
    # Ray made no group of its own.
    names = [g["GroupName"] for g in boto3.client("ec2").describe_security_groups()["SecurityGroups"]]
    assert "ray-autoscaler-rnn-models" not in names and names.count("rnn-models-ssh-only") == 1


def test_the_security_group_lets_in_ssh_from_one_range_and_the_group_itself(created):
    group = boto3.client("ec2").describe_security_groups(GroupIds=[created.security_group_id])["SecurityGroups"][0]
    within, ssh = sorted(group["IpPermissions"], key=lambda r: r["IpProtocol"])  # "-1" (all traffic), "tcp"
    assert within["IpProtocol"] == "-1" and not within["IpRanges"]
    assert [g["GroupId"] for g in within["UserIdGroupPairs"]] == [created.security_group_id]
    assert (ssh["IpProtocol"], ssh["FromPort"], ssh["ToPort"]) == ("tcp", 22, 22) and not ssh["UserIdGroupPairs"]
    assert [r["CidrIp"] for r in ssh["IpRanges"]] == [SSH_CIDR]


def test_setting_up_again_changes_nothing(created):
    ec2 = boto3.client("ec2")
    before = ec2.describe_security_groups(GroupIds=[created.security_group_id])["SecurityGroups"][0]["IpPermissions"]
    assert aws.set_up(REGION, BUCKET, SSH_CIDR) == created
    after = ec2.describe_security_groups(GroupIds=[created.security_group_id])["SecurityGroups"][0]["IpPermissions"]
    assert after == before
    profile = boto3.client("iam").get_instance_profile(InstanceProfileName=created.head_profile)["InstanceProfile"]
    assert [r["RoleName"] for r in profile["Roles"]] == ["rnn-models-head"]


def test_the_setup_script_prints_what_goes_into_cluster_yaml(created):
    out = subprocess.run([sys.executable, "jobs/aws_setup.py", "--region", REGION, "--bucket", BUCKET,
                          "--ssh-cidr", SSH_CIDR], cwd=REPO, capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.strip() == created.describe()
    assert yaml.safe_load(out.stdout.splitlines()[1]) == {"SecurityGroupIds": [created.security_group_id]}


def _policy_of(role: str) -> IAMPolicy:
    """Every inline policy of `role`, read back from the emulator's IAM, as one document for moto's evaluator."""
    iam = boto3.client("iam")
    statements = []
    for name in iam.list_role_policies(RoleName=role)["PolicyNames"]:
        document = iam.get_role_policy(RoleName=role, PolicyName=name)["PolicyDocument"]
        statements += (json.loads(document) if isinstance(document, str) else document)["Statement"]
    assert not iam.list_attached_role_policies(RoleName=role)["AttachedPolicies"]
    return IAMPolicy(json.dumps({"Version": "2012-10-17", "Statement": statements}))


def _allows(policy: IAMPolicy, action: str, resource: str, **context) -> bool:
    return policy.is_action_permitted(action, resource, incoming_condition_values=context) == PermissionResult.PERMITTED


def test_the_head_may_launch_workers_and_pass_them_only_their_role(created):
    iam = boto3.client("iam")
    assert [r["RoleName"] for r in iam.get_instance_profile(InstanceProfileName=created.head_profile)
            ["InstanceProfile"]["Roles"]] == ["rnn-models-head"]
    head = _policy_of("rnn-models-head")
    for action in ("ec2:RunInstances", "ec2:CreateTags", "ec2:TerminateInstances", "ec2:DescribeInstances"):
        assert _allows(head, action, "*"), action
    to_ec2 = {"iam:PassedToService": "ec2.amazonaws.com"}
    assert _allows(head, "iam:PassRole", created.worker_role_arn, **to_ec2)
    assert not _allows(head, "iam:PassRole", created.head_role_arn, **to_ec2)
    to_lambda = {"iam:PassedToService": "lambda.amazonaws.com"}
    assert not _allows(head, "iam:PassRole", created.worker_role_arn, **to_lambda)
    assert _allows(head, "s3:PutObject", f"arn:aws:s3:::{BUCKET}/runs/x")  # the trial drivers write to it
    assert not _allows(head, "s3:PutObject", "arn:aws:s3:::another-bucket/x")
    assert not _allows(head, "iam:CreateRole", "*")


def test_the_workers_may_use_the_bucket_and_nothing_else(created):
    iam = boto3.client("iam")
    assert [r["RoleName"] for r in iam.get_instance_profile(InstanceProfileName=created.worker_profile)
            ["InstanceProfile"]["Roles"]] == ["rnn-models-worker"]
    worker = _policy_of("rnn-models-worker")
    assert _allows(worker, "s3:ListBucket", f"arn:aws:s3:::{BUCKET}")
    for action in ("s3:GetObject", "s3:PutObject", "s3:DeleteObject"):
        assert _allows(worker, action, f"arn:aws:s3:::{BUCKET}/runs/checkpoint_000001/model.pt"), action
    assert not _allows(worker, "s3:GetObject", "arn:aws:s3:::another-bucket/x")
    for action in ("ec2:RunInstances", "iam:PassRole", "s3:DeleteBucket", "ssm:GetParameters"):
        assert not _allows(worker, action, "*"), action


def test_the_nodes_launch_with_their_profile_and_group(bootstrapped, created):
    """Ray's node provider sends each node_config to RunInstances (what `ray up` and the head's autoscaler do).
    moto checks that the profile, group, subnet and key exist, but does not resolve `resolve:ssm:` (real EC2 does)."""
    provider = AWSNodeProvider(bootstrapped["provider"], bootstrapped["cluster_name"])
    ec2 = boto3.client("ec2")
    for node_type, profile in (("head", "rnn-models-head"), ("gpu_1", "rnn-models-worker")):
        config = copy.deepcopy(bootstrapped["available_node_types"][node_type]["node_config"])
        tags = {"ray-node-kind": "head" if node_type == "head" else "worker", "ray-user-node-type": node_type,
                "ray-launch-config": "test", "ray-node-name": node_type}
        [instance_id] = provider.create_node(config, tags, 1)
        instance = ec2.describe_instances(InstanceIds=[instance_id])["Reservations"][0]["Instances"][0]
        assert instance["IamInstanceProfile"]["Arn"].endswith(f":instance-profile/{profile}")
        assert [g["GroupId"] for g in instance["SecurityGroups"]] == [created.security_group_id]
        assert instance["KeyName"] == config["KeyName"]
        provider.terminate_node(instance_id)


def test_the_old_layout_fails_on_a_duplicate_ssh_rule(emulator):
    # The cluster.yaml before: Ray's own group, with port 22 added through provider.security_group.
    cluster = yaml.safe_load((REPO / "cluster.yaml").read_text())
    cluster["provider"]["security_group"] = {"GroupName": "rnn-models-old-layout", "IpPermissions": [
        {"FromPort": 22, "ToPort": 22, "IpProtocol": "TCP", "IpRanges": [{"CidrIp": "0.0.0.0/0"}]}]}
    for node_type in cluster["available_node_types"].values():
        del node_type["node_config"]["SecurityGroupIds"]
    with pytest.raises(botocore.exceptions.ClientError, match="InvalidPermission.Duplicate"):
        ray_aws_config.bootstrap_aws(prepare_config(cluster))
