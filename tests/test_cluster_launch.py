"""cluster.yaml against an AWS emulator (moto's EC2 and IAM on loopback): rnn_models/aws.py creates the roles,
instance profiles and security group, and Ray's own launcher code bootstraps the config and starts nodes.

The roles' policies are checked with moto's IAM policy evaluator, which evaluates only StringEquals conditions,
takes a condition key that the request does not carry as met, and answers DENIED for a statement of the action
whose condition fails even when its resource does not match: a check passes the full context of the request."""

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
from ray.autoscaler._private.event_summarizer import EventSummarizer
from ray.autoscaler._private.node_launcher import BaseNodeLauncher
from ray.autoscaler._private.node_provider_availability_tracker import NodeProviderAvailabilityTracker
from ray.autoscaler._private.resource_demand_scheduler import ResourceDemandScheduler
from ray.autoscaler._private.util import ConcurrentCounter, prepare_config
from ray.autoscaler.tags import TAG_RAY_CLUSTER_NAME

from conftest import REPO, free_port, wait_for
from rnn_models import aws
from test_spot_fallback import head_start_env

REGION = "us-west-2"
BUCKET = "rnn-models-runs"
SSH_CIDR = "203.0.113.0/24"


def _clear_ray_boto_caches():
    # Ray caches boto3 clients per region: drop any made before (or for) this emulator.
    for cached in (
        ray_aws_utils.resource_cache,
        ray_aws_utils.client_cache,
        ray_aws_config._get_subnets_or_die,
    ):
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
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        stdin=subprocess.DEVNULL,
    )
    with pytest.MonkeyPatch.context() as mp:
        for name, value in {
            "AWS_ENDPOINT_URL": endpoint,
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": REGION,
            "AWS_EC2_METADATA_DISABLED": "true",
            "HOME": str(tmp_path_factory.mktemp("home")),
        }.items():
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


GPU_TYPES = ("gpu_spot", "gpu_on_demand")


def _cluster_yaml() -> dict:
    return yaml.safe_load((REPO / "cluster.yaml").read_text())


@pytest.fixture(scope="module")
def created(emulator):
    return aws.set_up(_cluster_yaml(), BUCKET, SSH_CIDR)


def _with(created) -> dict:
    """cluster.yaml with the values jobs/aws_setup.py prints filled in."""
    cluster = _cluster_yaml()
    profiles = {"head": created.head_profile, **{name: created.worker_profile for name in GPU_TYPES}}
    assert set(cluster["available_node_types"]) == set(profiles)
    for name, node_type in cluster["available_node_types"].items():
        node_type["node_config"]["SecurityGroupIds"] = [created.security_group_id]
        assert node_type["node_config"]["IamInstanceProfile"] == {"Name": profiles[name]}
    return cluster


@pytest.fixture(scope="module")
def bootstrapped(created):
    # What `ray up` hands the head (commands._bootstrap_config): resources filled out from the instance types.
    config = AWSNodeProvider.fillout_available_node_types_resources(prepare_config(_with(created)))
    return ray_aws_config.bootstrap_aws(config)


def test_ray_bootstraps_the_cluster_yaml(bootstrapped, created):
    types = bootstrapped["available_node_types"]
    assert {name: t["node_config"]["SecurityGroupIds"] for name, t in types.items()} == {
        name: [created.security_group_id] for name in ("head", *GPU_TYPES)
    }
    assert types["head"]["node_config"]["IamInstanceProfile"] == {"Name": "rnn-models-head"}
    for name in GPU_TYPES:
        assert types[name]["node_config"]["IamInstanceProfile"] == {"Name": "rnn-models-worker"}
    # Ray passes the SSM reference through (it replaces only an empty ImageId or "latest_dlami").
    assert all(
        t["node_config"]["ImageId"].startswith("resolve:ssm:/aws/service/deeplearning/")
        for t in types.values()
    )
    subnets = boto3.client("ec2").describe_subnets(SubnetIds=types["gpu_spot"]["node_config"]["SubnetIds"])[
        "Subnets"
    ]
    assert {s["AvailabilityZone"] for s in subnets} <= {"us-west-2a", "us-west-2b"}
    # Ray made no group of its own.
    names = [g["GroupName"] for g in boto3.client("ec2").describe_security_groups()["SecurityGroups"]]
    assert "ray-autoscaler-rnn-models" not in names and names.count("rnn-models-ssh-only") == 1


def test_the_security_group_lets_in_ssh_from_one_range_and_the_group_itself(created):
    group = boto3.client("ec2").describe_security_groups(GroupIds=[created.security_group_id])[
        "SecurityGroups"
    ][0]
    within, ssh = sorted(group["IpPermissions"], key=lambda r: r["IpProtocol"])  # "-1" (all traffic), "tcp"
    assert within["IpProtocol"] == "-1" and not within["IpRanges"]
    assert [g["GroupId"] for g in within["UserIdGroupPairs"]] == [created.security_group_id]
    assert (ssh["IpProtocol"], ssh["FromPort"], ssh["ToPort"]) == ("tcp", 22, 22) and not ssh[
        "UserIdGroupPairs"
    ]
    assert [r["CidrIp"] for r in ssh["IpRanges"]] == [SSH_CIDR]


def test_setting_up_again_changes_nothing(created):
    ec2 = boto3.client("ec2")
    before = ec2.describe_security_groups(GroupIds=[created.security_group_id])["SecurityGroups"][0][
        "IpPermissions"
    ]
    assert aws.set_up(_cluster_yaml(), BUCKET, SSH_CIDR) == created
    after = ec2.describe_security_groups(GroupIds=[created.security_group_id])["SecurityGroups"][0][
        "IpPermissions"
    ]
    assert after == before
    profile = boto3.client("iam").get_instance_profile(InstanceProfileName=created.head_profile)[
        "InstanceProfile"
    ]
    assert [r["RoleName"] for r in profile["Roles"]] == ["rnn-models-head"]


def test_the_setup_script_prints_what_goes_into_cluster_yaml(created):
    out = subprocess.run(
        [sys.executable, "jobs/aws_setup.py", "--bucket", BUCKET, "--ssh-cidr", SSH_CIDR],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert out.stdout.strip() == created.describe()
    assert yaml.safe_load(out.stdout.splitlines()[1]) == {"SecurityGroupIds": [created.security_group_id]}


def _statements_of(role: str) -> list[dict]:
    """The statements of every inline policy of `role`, read back from the emulator's IAM."""
    iam = boto3.client("iam")
    statements = []
    for name in iam.list_role_policies(RoleName=role)["PolicyNames"]:
        document = iam.get_role_policy(RoleName=role, PolicyName=name)["PolicyDocument"]
        statements += (json.loads(document) if isinstance(document, str) else document)["Statement"]
    assert not iam.list_attached_role_policies(RoleName=role)["AttachedPolicies"]
    return statements


def _policy_of(role: str) -> IAMPolicy:
    """All of `role`'s policies as one document for moto's evaluator."""
    return IAMPolicy(json.dumps({"Version": "2012-10-17", "Statement": _statements_of(role)}))


def _allows(policy: IAMPolicy, action: str, resource: str, **context) -> bool:
    return (
        policy.is_action_permitted(action, resource, incoming_condition_values=context)
        == PermissionResult.PERMITTED
    )


def _arn(created, resource: str) -> str:
    account = created.head_role_arn.split(":")[4]
    return f"arn:aws:ec2:{REGION}:{account}:{resource}"


def _vpc_arn(created) -> str:
    group = boto3.client("ec2").describe_security_groups(GroupIds=[created.security_group_id])[
        "SecurityGroups"
    ][0]
    return _arn(created, f"vpc/{group['VpcId']}")


def _launch(created, bootstrapped, node_type: str, **changes) -> tuple[list[str], dict]:
    """The resources Ray's RunInstances for `node_type` is authorised on, and the condition keys it carries (all
    of them, for every resource: see the module's note on moto)."""
    config = bootstrapped["available_node_types"][node_type]["node_config"]
    resources = [
        _arn(created, "instance/*"),
        f"arn:aws:ec2:{REGION}::image/ami-0123456789abcdef0",
        _arn(created, f"subnet/{config['SubnetIds'][0]}"),
        _arn(created, f"security-group/{created.security_group_id}"),
        _arn(created, "network-interface/*"),
        _arn(created, "volume/*"),
        _arn(created, f"key-pair/{config['KeyName']}"),
    ]
    if "InstanceMarketOptions" in config:
        resources.append(_arn(created, "spot-instances-request/*"))
    context = {
        "ec2:InstanceType": config["InstanceType"],
        "ec2:MetadataHttpTokens": config["MetadataOptions"]["HttpTokens"],
        f"aws:RequestTag/{TAG_RAY_CLUSTER_NAME}": bootstrapped["cluster_name"],
        "ec2:Vpc": _vpc_arn(created),
    }
    return resources, {**context, **changes}


OURS = {f"aws:ResourceTag/{TAG_RAY_CLUSTER_NAME}": "rnn-models"}
THEIRS = {f"aws:ResourceTag/{TAG_RAY_CLUSTER_NAME}": "another-cluster"}


def test_the_head_may_launch_workers_and_pass_them_only_their_role(created, bootstrapped):
    iam = boto3.client("iam")
    assert [
        r["RoleName"]
        for r in iam.get_instance_profile(InstanceProfileName=created.head_profile)["InstanceProfile"][
            "Roles"
        ]
    ] == ["rnn-models-head"]
    head = _policy_of("rnn-models-head")
    for node_type in GPU_TYPES:
        resources, context = _launch(created, bootstrapped, node_type)
        for resource in resources:
            assert _allows(head, "ec2:RunInstances", resource, **context), (node_type, resource)
    assert _allows(
        head, "ec2:CreateTags", _arn(created, "instance/*"), **{"ec2:CreateAction": "RunInstances"}
    )
    for action in ("ec2:CreateTags", "ec2:TerminateInstances"):
        assert _allows(head, action, _arn(created, "instance/i-0123456789abcdef0"), **OURS), action
    assert _allows(head, "ec2:DescribeInstances", "*")
    to_ec2 = {"iam:PassedToService": "ec2.amazonaws.com"}
    assert _allows(head, "iam:PassRole", created.worker_role_arn, **to_ec2)
    assert not _allows(head, "iam:PassRole", created.head_role_arn, **to_ec2)
    to_lambda = {"iam:PassedToService": "lambda.amazonaws.com"}
    assert not _allows(head, "iam:PassRole", created.worker_role_arn, **to_lambda)
    assert _allows(head, "s3:PutObject", f"arn:aws:s3:::{BUCKET}/runs/x")  # the trial drivers write to it
    assert not _allows(head, "s3:PutObject", "arn:aws:s3:::another-bucket/x")
    assert not _allows(head, "iam:CreateRole", "*")


@pytest.mark.parametrize(
    "changes",
    [
        {"ec2:InstanceType": "p4d.24xlarge"},
        {"ec2:InstanceType": "m6i.2xlarge"},  # not a worker type (the head's)
        {
            f"aws:RequestTag/{TAG_RAY_CLUSTER_NAME}": "another-cluster"
        },  # a node another cluster's autoscaler would own
        {"ec2:MetadataHttpTokens": "optional"},
    ],  # IMDSv1 allowed
    ids=["unlisted type", "the head's type", "another cluster's tag", "IMDSv1"],
)
def test_the_head_launches_only_this_clusters_worker_types_with_imdsv2(created, bootstrapped, changes):
    _, context = _launch(created, bootstrapped, "gpu_spot", **changes)
    assert not _allows(
        _policy_of("rnn-models-head"), "ec2:RunInstances", _arn(created, "instance/*"), **context
    )


def test_the_head_launches_only_into_its_groups_vpc_and_group(created, bootstrapped):
    head = _policy_of("rnn-models-head")
    _, context = _launch(created, bootstrapped, "gpu_spot", **{"ec2:Vpc": _arn(created, "vpc/vpc-0another")})
    assert not _allows(head, "ec2:RunInstances", _arn(created, "subnet/subnet-0another"), **context)
    _, context = _launch(created, bootstrapped, "gpu_spot")
    assert not _allows(head, "ec2:RunInstances", _arn(created, "security-group/sg-0another"), **context)


def test_the_head_tags_and_terminates_only_this_clusters_instances(created):
    head = _policy_of("rnn-models-head")
    instance = _arn(created, "instance/i-0123456789abcdef0")
    for action in ("ec2:CreateTags", "ec2:TerminateInstances"):
        assert not _allows(head, action, instance, **THEIRS), action
    # cluster.yaml's cache_stopped_nodes: false: Ray terminates, never stops or restarts.
    for action in (
        "ec2:StopInstances",
        "ec2:StartInstances",
        "ec2:DeleteTags",
        "ec2:ModifyInstanceAttribute",
    ):
        assert not _allows(head, action, instance, **OURS), action
    # Tags on creation only through RunInstances (its TagSpecifications).
    assert not _allows(
        head, "ec2:CreateTags", _arn(created, "instance/*"), **{"ec2:CreateAction": "CreateFleet"}
    )


def test_with_cache_stopped_nodes_the_head_may_stop_and_restart_its_own_instances():
    cluster = _cluster_yaml()
    del cluster["provider"]["cache_stopped_nodes"]  # Ray's default: true
    scope = aws.ClusterScope.of(cluster)
    policy = IAMPolicy(
        json.dumps(aws.launch_policy(scope, "123456789012", "vpc-1", "sg-1", "arn:aws:iam::1:role/w"))
    )
    instance = f"arn:aws:ec2:{REGION}:123456789012:instance/i-0123456789abcdef0"
    for action in ("ec2:StopInstances", "ec2:StartInstances"):
        assert _allows(policy, action, instance, **OURS) and not _allows(
            policy, action, instance, **THEIRS
        ), action


def test_the_launch_policy_is_read_from_cluster_yaml():
    assert aws.CLUSTER_TAG == TAG_RAY_CLUSTER_NAME
    assert aws.ClusterScope.of(_cluster_yaml()) == aws.ClusterScope(
        "rnn-models", REGION, ("g5.2xlarge",), False
    )


def test_the_head_policy_writes_ec2_only_under_conditions_moto_evaluates(created):
    """moto checks StringEquals only (other operators pass unchecked), so the policy uses no other; and no EC2
    write is allowed on every resource, which the evaluator checks above only for the actions named."""
    for statement in _statements_of("rnn-models-head"):
        assert set(statement.get("Condition", {})) <= {"StringEquals"}, statement
        actions = [statement["Action"]] if isinstance(statement["Action"], str) else statement["Action"]
        if statement["Resource"] == "*":
            assert all(a.startswith("ec2:Describe") or a == "iam:CreateServiceLinkedRole" for a in actions), (
                statement
            )


def test_the_workers_may_use_the_bucket_and_nothing_else(created):
    iam = boto3.client("iam")
    assert [
        r["RoleName"]
        for r in iam.get_instance_profile(InstanceProfileName=created.worker_profile)["InstanceProfile"][
            "Roles"
        ]
    ] == ["rnn-models-worker"]
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
    for node_type, profile in (
        ("head", "rnn-models-head"),
        ("gpu_spot", "rnn-models-worker"),
        ("gpu_on_demand", "rnn-models-worker"),
    ):
        config = copy.deepcopy(bootstrapped["available_node_types"][node_type]["node_config"])
        tags = {
            "ray-node-kind": "head" if node_type == "head" else "worker",
            "ray-user-node-type": node_type,
            "ray-launch-config": "test",
            "ray-node-name": node_type,
        }
        [instance_id] = provider.create_node(config, tags, 1)
        instance = ec2.describe_instances(InstanceIds=[instance_id])["Reservations"][0]["Instances"][0]
        assert instance["IamInstanceProfile"]["Arn"].endswith(f":instance-profile/{profile}")
        assert [g["GroupId"] for g in instance["SecurityGroups"]] == [created.security_group_id]
        assert instance["KeyName"] == config["KeyName"]
        assert instance["MetadataOptions"]["HttpTokens"] == "required"  # IMDSv2, as the head's policy demands
        assert instance.get("InstanceLifecycle") == ("spot" if node_type == "gpu_spot" else None)
        tags = {t["Key"]: t["Value"] for t in instance["Tags"]}
        assert tags[TAG_RAY_CLUSTER_NAME] == "rnn-models"  # what the head's policy binds it to
        provider.terminate_node(instance_id)


def test_a_failed_spot_launch_falls_back_to_on_demand(bootstrapped, monkeypatch):
    """The head's autoscaler, piece by piece with Ray's own classes: the node provider's failed RunInstances becomes
    a NodeLaunchException, the node launcher marks the type unavailable, and the scheduler (with the scorer the
    head's `ray start` names) picks the on-demand type next. EC2 without spot capacity is played by a group the
    emulator does not know, which fails RunInstances the same way."""
    config = copy.deepcopy(bootstrapped)
    config["available_node_types"]["gpu_spot"]["node_config"]["SecurityGroupIds"] = ["sg-0000000000000000f"]
    scorer = "RAY_AUTOSCALER_UTILIZATION_SCORER"
    monkeypatch.setenv(scorer, head_start_env(config)[scorer])
    provider = AWSNodeProvider(config["provider"], config["cluster_name"])
    tracker, pending = NodeProviderAvailabilityTracker(), ConcurrentCounter()
    launcher = BaseNodeLauncher(
        provider, pending, EventSummarizer(), tracker, node_types=config["available_node_types"]
    )
    scheduler = ResourceDemandScheduler(
        provider,
        config["available_node_types"],
        config["max_workers"],
        config["head_node_type"],
        config["upscaling_speed"],
    )
    head_tags = {"ray-node-kind": "head", "ray-user-node-type": "head", "ray-launch-config": "test"}
    [head] = provider.create_node(
        copy.deepcopy(config["available_node_types"]["head"]["node_config"]), head_tags, 1
    )
    launched = []
    for _ in range(2):  # two autoscaler updates, each asked for one GPU (rnn_models.cluster.wait_for_gpus)
        nodes = provider.non_terminated_nodes({})
        assert nodes == [head]  # the failed spot launch left no node
        to_launch, _ = scheduler.get_nodes_to_launch(
            nodes, {}, [{"GPU": 1}], {}, [], {}, [], tracker.summary()
        )
        [(node_type, count)] = to_launch.items()
        pending.inc(node_type, count)
        launched.append((node_type, list(launcher.launch_node(config, count, node_type))))
    assert [(node_type, len(ids)) for node_type, ids in launched] == [("gpu_spot", 0), ("gpu_on_demand", 1)]
    spot = tracker.summary().node_availabilities["gpu_spot"]
    assert not spot.is_available and spot.unavailable_node_information.category == "InvalidGroup.NotFound"
    provider.terminate_nodes([head, *launched[1][1]])


def test_the_old_layout_fails_on_a_duplicate_ssh_rule(emulator):
    # The cluster.yaml before: Ray's own group, with port 22 added through provider.security_group.
    cluster = yaml.safe_load((REPO / "cluster.yaml").read_text())
    cluster["provider"]["security_group"] = {
        "GroupName": "rnn-models-old-layout",
        "IpPermissions": [
            {"FromPort": 22, "ToPort": 22, "IpProtocol": "TCP", "IpRanges": [{"CidrIp": "0.0.0.0/0"}]}
        ],
    }
    for node_type in cluster["available_node_types"].values():
        del node_type["node_config"]["SecurityGroupIds"]
    with pytest.raises(botocore.exceptions.ClientError, match="InvalidPermission.Duplicate"):
        ray_aws_config.bootstrap_aws(prepare_config(cluster))
