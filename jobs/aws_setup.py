"""Create (or update) the AWS roles, instance profiles and security group that cluster.yaml names.

    python jobs/aws_setup.py --bucket YOUR-BUCKET --ssh-cidr 203.0.113.0/24

Run it with your own (admin) AWS credentials, once per account and region; it prints what goes into
cluster.yaml. Rerunning it is safe; rerun it after changing cluster.yaml's cluster_name, region or worker
instance types, which bind the head's launch policy.
"""

import argparse
from pathlib import Path

import yaml

from rnn_models.aws import set_up

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--cluster-config",
        default=str(Path(__file__).resolve().parent.parent / "cluster.yaml"),
        help="its region, cluster_name and node types (default: the repository's cluster.yaml)",
    )
    parser.add_argument(
        "--bucket", required=True, help="the bucket of --storage s3://BUCKET/..., the nodes' only one"
    )
    parser.add_argument(
        "--ssh-cidr", required=True, help="the range `ray up` connects from, e.g. 203.0.113.0/24"
    )
    parser.add_argument("--vpc-id", help="default: the region's default VPC")
    args = parser.parse_args()
    config = Path(args.cluster_config)
    if not config.is_file():
        parser.error(f"--cluster-config {config}: no such file")
    cluster = yaml.safe_load(config.read_text())
    print(set_up(cluster, args.bucket, args.ssh_cidr, args.vpc_id).describe())
