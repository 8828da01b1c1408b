"""The AWS pieces `cluster.yaml` names but Ray's launcher does not create the way this project needs them.

- `rnn-models-head`: the head's role and instance profile. Its autoscaler launches the GPU workers (EC2) and
  hands them their role (`iam:PassRole` on the workers' role only); its trial drivers write to the bucket.
  `launch_policy` limits EC2 to what Ray's AWS node provider calls on the head, and to this cluster: job code
  on the head can launch only cluster.yaml's worker instance types, tagged as this cluster's, with IMDSv2, in
  the group's VPC, and tag or terminate only instances carrying this cluster's tag.
- `rnn-models-worker`: the workers' role and instance profile: the bucket, nothing else.
- `rnn-models-ssh-only`: the security group of every node: SSH from one address range, and all traffic
  between members of the group. Ray's own group would open SSH to 0.0.0.0/0, and adding a port-22 rule
  through `provider.security_group.IpPermissions` duplicates Ray's rule (`InvalidPermission.Duplicate`).

`set_up` is idempotent: rerun it to update the policies. It only adds security group rules, never removes
any: after narrowing --ssh-cidr, revoke the old rule (`aws ec2 revoke-security-group-ingress`).
"""

import json
from dataclasses import dataclass

import boto3
import botocore.exceptions

HEAD = "rnn-models-head"
WORKER = "rnn-models-worker"
SECURITY_GROUP = "rnn-models-ssh-only"
CLUSTER_TAG = (
    "ray-cluster-name"  # ray.autoscaler.tags.TAG_RAY_CLUSTER_NAME: Ray puts it on every node it starts
)

# Lets EC2 instances assume the role (what an instance profile needs).
EC2_TRUST = {
    "Version": "2012-10-17",
    "Statement": [
        {"Effect": "Allow", "Principal": {"Service": "ec2.amazonaws.com"}, "Action": "sts:AssumeRole"}
    ],
}


@dataclass(frozen=True)
class ClusterScope:
    """What the head's policy is bound to, read from cluster.yaml (the one place these are written)."""

    name: str  # cluster_name: the value of every node's ray-cluster-name tag
    region: str  # provider.region
    instance_types: tuple[str, ...]  # of the worker node types: the head's autoscaler launches only workers
    stops_nodes: bool  # provider.cache_stopped_nodes (Ray's default true): stop and restart, not terminate

    @classmethod
    def of(cls, cluster: dict) -> "ClusterScope":
        workers = [
            t for name, t in cluster["available_node_types"].items() if name != cluster["head_node_type"]
        ]
        return cls(
            cluster["cluster_name"],
            cluster["provider"]["region"],
            tuple(sorted({t["node_config"]["InstanceType"] for t in workers})),
            cluster["provider"].get("cache_stopped_nodes", True),
        )


@dataclass(frozen=True)
class ClusterAws:
    security_group_id: str  # every node_config's SecurityGroupIds
    head_profile: str  # the head node type's IamInstanceProfile Name
    worker_profile: str  # every worker node type's IamInstanceProfile Name
    head_role_arn: str
    worker_role_arn: str

    def describe(self) -> str:
        """What to put into cluster.yaml."""
        return (
            f"# every node_config:\nSecurityGroupIds: [{self.security_group_id}]\n"
            f"# the head node type's node_config:\nIamInstanceProfile: {{Name: {self.head_profile}}}\n"
            f"# each GPU worker node type's node_config:\nIamInstanceProfile: {{Name: {self.worker_profile}}}"
        )


def storage_policy(bucket: str) -> dict:
    """Read and write `s3://bucket` (Tune state, checkpoints, results), no other bucket."""
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Action": ["s3:ListBucket", "s3:GetBucketLocation"],
                "Resource": f"arn:aws:s3:::{bucket}",
            },
            {
                "Effect": "Allow",
                "Action": ["s3:GetObject", "s3:PutObject", "s3:DeleteObject", "s3:AbortMultipartUpload"],
                "Resource": f"arn:aws:s3:::{bucket}/*",
            },
        ],
    }


def launch_policy(
    scope: ClusterScope, account: str, vpc_id: str, group_id: str, worker_role_arn: str
) -> dict:
    """What the head's autoscaler calls (ray/autoscaler/_private/aws/node_provider.py) to start and stop workers,
    bound to this cluster."""
    arn = lambda resource: f"arn:aws:ec2:{scope.region}:{account}:{resource}"
    return {
        "Version": "2012-10-17",
        "Statement": [
            # Read-only (EC2's Describe calls take no resource-level permissions): the autoscaler lists its nodes;
            # the others are Ray's bootstrap, when a `ray` command on the head reads its config (`ray exec --stop`).
            {
                "Effect": "Allow",
                "Resource": "*",
                "Action": [
                    "ec2:DescribeInstances",
                    "ec2:DescribeInstanceTypes",
                    "ec2:DescribeSubnets",
                    "ec2:DescribeSecurityGroups",
                    "ec2:DescribeImages",
                    "ec2:DescribeKeyPairs",
                ],
            },
            *_run_instances(scope, arn, vpc_id, group_id),
            # Ray's tags at launch (RunInstances' TagSpecifications), and only there.
            {
                "Effect": "Allow",
                "Action": "ec2:CreateTags",
                "Resource": arn("instance/*"),
                "Condition": {"StringEquals": {"ec2:CreateAction": "RunInstances"}},
            },
            # Afterwards (status tags, scale-down): this cluster's instances only.
            {
                "Effect": "Allow",
                "Action": _own_instance_actions(scope),
                "Resource": arn("instance/*"),
                "Condition": {"StringEquals": {f"aws:ResourceTag/{CLUSTER_TAG}": scope.name}},
            },
            # Workers get their own profile: the head may hand them that role and no other (not its own).
            {
                "Effect": "Allow",
                "Action": "iam:PassRole",
                "Resource": worker_role_arn,
                "Condition": {"StringEquals": {"iam:PassedToService": "ec2.amazonaws.com"}},
            },
            # ImageId "resolve:ssm:/aws/service/..." makes RunInstances read that public parameter as the caller.
            {
                "Effect": "Allow",
                "Action": "ssm:GetParameters",
                "Resource": "arn:aws:ssm:*::parameter/aws/service/*",
            },
            # The first spot launch of an account creates EC2's spot service-linked role.
            {
                "Effect": "Allow",
                "Action": "iam:CreateServiceLinkedRole",
                "Resource": "*",
                "Condition": {"StringEquals": {"iam:AWSServiceName": "spot.amazonaws.com"}},
            },
        ],
    }


def _run_instances(scope: ClusterScope, arn, vpc_id: str, group_id: str) -> list[dict]:
    """RunInstances is authorised on each resource it touches: one statement per resource's conditions (only
    StringEquals, which moto's evaluator checks too)."""
    return [
        # The instance: a worker type of cluster.yaml, tagged as this cluster's in the request (so the tag-bound
        # statement covers it afterwards), and IMDSv2 only (every node_config's MetadataOptions).
        {
            "Effect": "Allow",
            "Action": "ec2:RunInstances",
            "Resource": arn("instance/*"),
            "Condition": {
                "StringEquals": {
                    "ec2:InstanceType": list(scope.instance_types),
                    f"aws:RequestTag/{CLUSTER_TAG}": scope.name,
                    "ec2:MetadataHttpTokens": "required",
                }
            },
        },
        # In a subnet of the group's VPC (Ray's bootstrap picks the subnets), with that group only.
        {
            "Effect": "Allow",
            "Action": "ec2:RunInstances",
            "Resource": arn("subnet/*"),
            "Condition": {"StringEquals": {"ec2:Vpc": arn(f"vpc/{vpc_id}")}},
        },
        {
            "Effect": "Allow",
            "Action": "ec2:RunInstances",
            "Resource": [
                arn(f"security-group/{group_id}"),
                f"arn:aws:ec2:{scope.region}::image/*",
                arn("network-interface/*"),
                arn("volume/*"),
                arn("key-pair/*"),
                arn("spot-instances-request/*"),
            ],
        },
    ]


def _own_instance_actions(scope: ClusterScope) -> list[str]:
    """Ray terminates idle workers; with cache_stopped_nodes it stops them instead and restarts them for reuse."""
    stop = ["ec2:StopInstances", "ec2:StartInstances"] if scope.stops_nodes else []
    return ["ec2:CreateTags", "ec2:TerminateInstances", *stop]


def set_up(cluster: dict, bucket: str, ssh_cidr: str, vpc_id: str | None = None) -> ClusterAws:
    """Create (or update) both roles with their instance profiles and the SSH-only group in `vpc_id` (default:
    the region's default VPC, whose subnets give instances the public IPs `ray up` needs), in the region of
    `cluster` (cluster.yaml, loaded), whose name and worker instance types bind the head's launch policy."""
    scope = ClusterScope.of(cluster)
    iam, ec2 = boto3.client("iam", region_name=scope.region), boto3.client("ec2", region_name=scope.region)
    vpc_id = vpc_id or _default_vpc(ec2)
    group_id = _ssh_only_group(ec2, vpc_id, ssh_cidr)
    worker_arn = _role_with_profile(iam, WORKER, {"storage": storage_policy(bucket)})
    account = worker_arn.split(":")[4]  # arn:aws:iam::ACCOUNT:role/NAME
    launch = launch_policy(scope, account, vpc_id, group_id, worker_arn)
    head_arn = _role_with_profile(iam, HEAD, {"storage": storage_policy(bucket), "launch": launch})
    return ClusterAws(group_id, HEAD, WORKER, head_arn, worker_arn)


def _role_with_profile(iam, name: str, policies: dict[str, dict]) -> str:
    """A role of that name with exactly these inline policies (overwritten), in a profile of the same name."""
    try:
        arn = iam.create_role(RoleName=name, AssumeRolePolicyDocument=json.dumps(EC2_TRUST))["Role"]["Arn"]
    except iam.exceptions.EntityAlreadyExistsException:
        arn = iam.get_role(RoleName=name)["Role"]["Arn"]
    for policy_name, document in policies.items():
        iam.put_role_policy(RoleName=name, PolicyName=policy_name, PolicyDocument=json.dumps(document))
    try:
        iam.create_instance_profile(InstanceProfileName=name)
    except iam.exceptions.EntityAlreadyExistsException:
        pass
    if not iam.get_instance_profile(InstanceProfileName=name)["InstanceProfile"]["Roles"]:
        iam.add_role_to_instance_profile(InstanceProfileName=name, RoleName=name)
    return arn


def _default_vpc(ec2) -> str:
    vpcs = ec2.describe_vpcs(Filters=[{"Name": "is-default", "Values": ["true"]}])["Vpcs"]
    if not vpcs:
        raise ValueError("this region has no default VPC: pass --vpc-id (its subnets must map public IPs)")
    return vpcs[0]["VpcId"]


def _ssh_only_group(ec2, vpc_id: str, ssh_cidr: str) -> str:
    found = ec2.describe_security_groups(
        Filters=[{"Name": "group-name", "Values": [SECURITY_GROUP]}, {"Name": "vpc-id", "Values": [vpc_id]}]
    )["SecurityGroups"]
    group_id = (
        found[0]["GroupId"]
        if found
        else ec2.create_security_group(
            GroupName=SECURITY_GROUP,
            VpcId=vpc_id,
            Description="rnn-models Ray nodes: SSH from one range, all traffic within the group",
        )["GroupId"]
    )
    rules = [
        {"IpProtocol": "tcp", "FromPort": 22, "ToPort": 22, "IpRanges": [{"CidrIp": ssh_cidr}]},
        # Ray's GCS, raylets, object managers and workers use many ports between nodes.
        {"IpProtocol": "-1", "UserIdGroupPairs": [{"GroupId": group_id}]},
    ]
    for rule in rules:  # one at a time: a rule already there fails only its own call
        try:
            ec2.authorize_security_group_ingress(GroupId=group_id, IpPermissions=[rule])
        except botocore.exceptions.ClientError as exc:
            if exc.response["Error"]["Code"] != "InvalidPermission.Duplicate":
                raise
    return group_id
