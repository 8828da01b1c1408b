"""deploy/kuberay/rayjob.yaml against KubeRay's published RayJob schema, checked strictly, and the one install
script that CI, cluster.yaml and the image share. Nothing here reaches Kubernetes, Docker or a GPU.

The schema is `spec.versions[name=v1].schema.openAPIV3Schema` of KubeRay's
helm-chart/kuberay-operator/crds/ray.io_rayjobs.yaml at tag v1.7.0 (commit
59d663aeec13760646da3db9c1cf8cfe883e30b7), kept in tests/data/ (see its README).
"""

import json
import lzma
import re
import shlex
import subprocess
from importlib.metadata import requires

import jsonschema
import pytest
import yaml
from packaging.requirements import Requirement

from conftest import REPO
from rnn_models import config as C
from rnn_models.cli import build_parser, config_from
from rnn_models.resources import plan_resources

MANIFEST = REPO / "deploy" / "kuberay" / "rayjob.yaml"
SCHEMA = REPO / "tests" / "data" / "kuberay_rayjob_v1_schema.json.xz"
PROJECT = "/home/ray/rnn-models"  # where the image (and cluster.yaml's file_mounts) put the project
INSTALL = f"sh {PROJECT}/deploy/install.sh"


def strict(schema: dict) -> dict:
    """A copy of a CRD schema that refuses unknown fields as `kubectl apply --validate=strict` does: wherever it
    lists `properties` and does not keep unknown fields (x-kubernetes-preserve-unknown-fields)."""
    s = dict(schema)
    if "properties" in s:
        s["properties"] = {name: strict(sub) for name, sub in s["properties"].items()}
        if not s.get("x-kubernetes-preserve-unknown-fields") and "additionalProperties" not in s:
            s["additionalProperties"] = False
    for key in ("items", "additionalProperties"):
        if isinstance(s.get(key), dict):
            s[key] = strict(s[key])
    for key in ("anyOf", "allOf", "oneOf"):
        if key in s:
            s[key] = [strict(sub) for sub in s[key]]
    if s.get("x-kubernetes-int-or-string"):  # a quantity or a port: 7 and "7" alike
        s.setdefault("anyOf", [{"type": "integer"}, {"type": "string"}])
    if s.get("nullable") and "type" in s:
        s["type"] = [s["type"], "null"]
    return s


@pytest.fixture(scope="module")
def schema() -> dict:
    return json.loads(lzma.decompress(SCHEMA.read_bytes()))


@pytest.fixture(scope="module")
def validator(schema):
    return jsonschema.Draft4Validator(strict(schema))  # OpenAPI 3.0's schemas are draft 4's, near enough


@pytest.fixture
def documents() -> list[dict]:
    return [d for d in yaml.safe_load_all(MANIFEST.read_text()) if d]


@pytest.fixture
def rayjob(documents) -> dict:
    (job,) = [d for d in documents if d["kind"] == "RayJob"]
    return job


def containers(job: dict) -> list[dict]:
    cluster = job["spec"]["rayClusterSpec"]
    groups = [cluster["headGroupSpec"], *cluster["workerGroupSpecs"]]
    return [c for g in groups for c in g["template"]["spec"]["containers"]]


def gpu_group(job: dict) -> dict:
    (group,) = [
        g
        for g in job["spec"]["rayClusterSpec"]["workerGroupSpecs"]
        if g["template"]["spec"]["containers"][0]["resources"]["limits"].get("nvidia.com/gpu")
    ]
    return group


def test_every_rayjob_matches_kuberays_schema_strictly(documents, validator):
    jobs = [d for d in documents if d["kind"] == "RayJob"]
    assert jobs
    for job in jobs:
        assert [e.message for e in validator.iter_errors(job)] == []
        # What the API server checks beside the schema: the name (KubeRay's limit is 47 characters).
        assert re.fullmatch(r"[a-z]([-a-z0-9]{0,45}[a-z0-9])?", job["metadata"]["name"])


@pytest.mark.parametrize(
    "path, value, message",
    [
        (["spec", "shutdownAfterJobFinish"], True, "'shutdownAfterJobFinish' was unexpected"),
        (["spec", "rayClusterSpec", "headGroupSpec", "rayStartParam"], {}, "'rayStartParam' was unexpected"),
        (
            ["spec", "rayClusterSpec", "workerGroupSpecs", 0, "template", "spec", "containers", 0, "imag"],
            "x",
            "'imag' was unexpected",
        ),
        (
            ["spec", "rayClusterSpec", "workerGroupSpecs", 0, "maxReplicas"],
            "two",
            "'two' is not of type 'integer'",
        ),
        (["spec", "rayClusterSpec", "authOptions", "mode"], "tokens", "'tokens' is not one of"),
        (
            [
                "spec",
                "rayClusterSpec",
                "headGroupSpec",
                "template",
                "spec",
                "containers",
                0,
                "resources",
                "limits",
                "cpu",
            ],
            [7],
            "is not valid under any of the given schemas",
        ),
    ],
)
def test_the_validation_does_reject_broken_manifests(rayjob, validator, path, value, message):
    node = rayjob
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    with pytest.raises(jsonschema.ValidationError, match=re.escape(message)):
        validator.validate(rayjob)


def test_quantities_may_be_numbers_or_strings(rayjob, validator):
    limits = containers(rayjob)[0]["resources"]["limits"]
    for cpu in (7, "7", "7000m"):
        limits["cpu"] = cpu
        validator.validate(rayjob)


def test_no_field_with_rules_the_schema_cannot_express_is_set(rayjob, schema):
    # x-kubernetes-validations (CEL) are not evaluated here; they sit on fields this manifest leaves out.
    def ruled(node, path):
        if "x-kubernetes-validations" in node:
            yield path
        for name, sub in node.get("properties", {}).items():
            yield from ruled(sub, path + (name,))

    for path in ruled(schema, ()):
        node = rayjob
        for key in path:
            node = node.get(key, {}) if isinstance(node, dict) else {}
        assert node == {}, f"{'.'.join(path)} carries CEL rules this test does not check"


def test_the_entrypoint_runs_train_all_with_options_train_accepts(rayjob):
    python, script, *options = shlex.split(rayjob["spec"]["entrypoint"])
    assert python == "python" and script == f"{PROJECT}/jobs/train_all.py"
    assert (REPO / script.removeprefix(PROJECT + "/")).is_file()
    args = build_parser().parse_args(["train", *options])  # a bad option raises UserError
    config_from(args, C.RunConfig, data=args.data)  # and its values pass the run's checks
    assert args.source and args.data.startswith("s3://") and args.storage.startswith("s3://")


def test_every_container_runs_the_projects_image_whose_ray_the_project_accepts(rayjob):
    images = {c["image"] for c in containers(rayjob)}
    assert len(images) == 1 and not images.pop().startswith("rayproject/")  # the built one, torch inside
    base = re.search(
        r"^FROM rayproject/ray:(\S+)-py311-gpu$", (REPO / "deploy" / "Dockerfile").read_text(), re.M
    )
    assert rayjob["spec"]["rayClusterSpec"]["rayVersion"] == base.group(1)
    # deploy/install.sh leaves the image's Ray alone only if it satisfies pyproject.toml's requirement.
    (ray,) = [
        r for r in map(Requirement, requires("rnn-models")) if r.name == "ray"
    ]  # pyproject.toml's, installed
    assert ray.specifier.contains(base.group(1))


def test_the_gpu_group_scales_from_zero(rayjob):
    cluster = rayjob["spec"]["rayClusterSpec"]
    group = gpu_group(rayjob)
    assert cluster["enableInTreeAutoscaling"] and group["minReplicas"] == group["replicas"] == 0
    limits = group["template"]["spec"]["containers"][0]["resources"]["limits"]
    assert group["maxReplicas"] == 2 and limits["nvidia.com/gpu"] == 1
    head = cluster["headGroupSpec"]["template"]["spec"]["containers"][0]["resources"]["limits"]
    assert "nvidia.com/gpu" not in head


def test_four_trials_run_at_once_on_one_gpu_pod(rayjob):
    cpus = lambda g: float(g["template"]["spec"]["containers"][0]["resources"]["limits"]["cpu"])
    head, gpu = rayjob["spec"]["rayClusterSpec"]["headGroupSpec"], gpu_group(rayjob)
    plan = plan_resources(4, cpus(head) + cpus(gpu), 1, cpus_per_gpu=cpus(gpu))
    assert plan.concurrent_trials == 4 and 4 * plan.cpus_per_worker <= cpus(gpu) and plan.gpus_per_worker > 0


def test_token_auth_from_a_secret_and_the_cluster_goes_after_the_job(rayjob, documents):
    spec = rayjob["spec"]
    assert spec["rayClusterSpec"]["authOptions"] == {"mode": "token", "secretName": "rnn-models-ray-token"}
    assert spec["shutdownAfterJobFinishes"] and spec["ttlSecondsAfterFinished"] > 0
    assert not [d for d in documents if d["kind"] == "Secret"]  # the token is never in the repository


def test_the_other_manifests_have_their_basic_shape(rayjob, documents):
    others = [d for d in documents if d["kind"] != "RayJob"]
    assert [d["kind"] for d in others] == ["ServiceAccount"]
    assert all(d["apiVersion"] == "v1" and d["metadata"]["name"] for d in others)
    (account,) = [d for d in others if d["kind"] == "ServiceAccount"]
    assert account["metadata"]["annotations"]["eks.amazonaws.com/role-arn"].startswith("arn:aws:iam::")
    cluster = rayjob["spec"]["rayClusterSpec"]
    pods = [cluster["headGroupSpec"], *cluster["workerGroupSpecs"]]
    assert {g["template"]["spec"]["serviceAccountName"] for g in pods} == {account["metadata"]["name"]}


def test_ci_cluster_yaml_and_the_image_all_install_with_the_script():
    subprocess.run(["sh", "-n", REPO / "deploy" / "install.sh"], check=True)  # POSIX sh parses it
    dockerfile = (REPO / "deploy" / "Dockerfile").read_text()
    assert f"RUN PIP_NO_CACHE_DIR=1 {INSTALL}\n" in dockerfile
    assert f"COPY --chown=ray:users deploy {PROJECT}/deploy\n" in dockerfile
    cluster = yaml.safe_load((REPO / "cluster.yaml").read_text())
    assert cluster["setup_commands"] == [INSTALL] and cluster["file_mounts"][PROJECT] == "."
    # The README line .ci/run evaluates: the first that matches its pattern.
    pattern = re.search(r"grep -m1 -E '([^']+)' README.md", (REPO / ".ci" / "run").read_text()).group(1)
    readme = (REPO / "README.md").read_text().splitlines()
    ci_line = next(line for line in readme if re.search(pattern, line))
    assert "&& sh deploy/install.sh test &&" in ci_line and ci_line.endswith("&& pytest")
