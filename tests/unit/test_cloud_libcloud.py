"""libcloud_nodes: the dummy driver in-process, the EC2 driver against moto, and the playbooks."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pathload import load

pytestmark = pytest.mark.filterwarnings("ignore:datetime.datetime.utcnow:DeprecationWarning")


TESTS = Path(__file__).resolve().parents[1]
cloudtest = load("cloudtest", TESTS / "cloud" / "cloudtest.py")
libcloud_nodes = load("libcloud_nodes", cloudtest.REPO / "plugins" / "modules" / "libcloud_nodes.py")

DEFAULTS = {name: spec.get("default") for name, spec in libcloud_nodes.ARGUMENT_SPEC.items()}
SETS = [
    {
        "name": "head",
        "count": 1,
        "size": "1",
        "image": "1",
        "groups": ["head", "dask_scheduler"],
        "location": None,
    },
    {"name": "worker", "count": 2, "size": "1", "image": "1", "groups": ["workers"], "location": None},
]


def params(**values: Any) -> dict[str, Any]:
    return {**DEFAULTS, **values}


@pytest.fixture(scope="module")
def moto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    yield from cloudtest.start_moto(tmp_path_factory.mktemp("cloud-libcloud"))


@pytest.fixture
def aws_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for key, value in cloudtest.FAKE_CREDENTIALS.items():
        monkeypatch.setenv(key, value)


def test_dummy_driver_create_list_idempotent_destroy() -> None:
    driver = libcloud_nodes.connect("dummy", None, None, {})
    foreign = sorted(node.name for node in driver.list_nodes())  # the driver's own sample nodes
    request = params(provider="dummy", cluster_name="dm", node_sets=SETS, tags={"clusterforge_owner": "me"})

    planned = libcloud_nodes.run(dict(request), check_mode=True, driver=driver)
    assert planned["changed"] and planned["created"] == ["dm-head-1", "dm-worker-1", "dm-worker-2"]
    assert sorted(node.name for node in driver.list_nodes()) == foreign, "check mode created something"

    created = libcloud_nodes.run(dict(request), check_mode=False, driver=driver)
    assert [node["name"] for node in created["nodes"]] == ["dm-head-1", "dm-worker-1", "dm-worker-2"]
    head = created["nodes"][0]
    assert head["groups"] == ["head", "dask_scheduler"] and head["node_set"] == "head"
    assert head["tags"]["clusterforge_cluster"] == "dm" and head["tags"]["clusterforge_owner"] == "me"

    again = libcloud_nodes.run(dict(request), check_mode=False, driver=driver)
    assert not again["changed"] and again["created"] == [] and again["destroyed"] == []

    smaller = [SETS[0], {**SETS[1], "count": 1}]
    shrunk = libcloud_nodes.run(dict(request, node_sets=smaller), check_mode=False, driver=driver)
    assert shrunk["destroyed"] == ["dm-worker-2"]

    listed = libcloud_nodes.run(params(provider="dummy", state="list"), check_mode=False, driver=driver)
    assert [node["name"] for node in listed["nodes"]] == ["dm-head-1", "dm-worker-1"]

    gone = libcloud_nodes.run(
        params(provider="dummy", cluster_name="dm", state="absent"), False, driver=driver
    )
    assert gone["destroyed"] == ["dm-head-1", "dm-worker-1"]
    assert sorted(node.name for node in driver.list_nodes()) == foreign, "only the cluster's nodes go"


def test_refuses_without_cluster_name_and_unknown_provider() -> None:
    with pytest.raises(libcloud_nodes.LibcloudNodesError, match="cluster_name is empty"):
        libcloud_nodes.run(params(provider="dummy", state="absent"), check_mode=False)
    for untested in ("nope", "gce", "azure_arm", "openstack"):
        with pytest.raises(
            libcloud_nodes.LibcloudNodesError, match=f"unsupported libcloud provider '{untested}'"
        ):
            libcloud_nodes.connect(untested, "k", "s", {})
    assert libcloud_nodes.ARGUMENT_SPEC["provider"]["choices"] == ["dummy", "ec2"]
    with pytest.raises(libcloud_nodes.LibcloudNodesError, match="count must be at least 0"):
        libcloud_nodes.desired_nodes("x", [{**SETS[0], "count": -1}])


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        (
            {"tags": {"clusterforge_cluster": "a", "Name": "a-head-1"}},
            {"clusterforge_cluster": "a", "Name": "a-head-1"},
        ),
        ({"clusterforge_tags": {"clusterforge_cluster": "b"}}, {"clusterforge_cluster": "b"}),
        ({"metadata": {"clusterforge_cluster": "c"}}, {}),
        ({"foo": "bar"}, {}),
    ],
    ids=["ec2-tags", "dummy-tags", "other-metadata-ignored", "none"],
)
def test_tags_are_read_where_each_driver_keeps_them(extra: dict[str, Any], expected: dict[str, str]) -> None:
    class Node:
        pass

    node = Node()
    node.extra = extra
    assert libcloud_nodes.node_tags(node) == expected


def test_plan_and_expiry() -> None:
    assert libcloud_nodes.plan(["c-w-1", "c-w-3"], ["c-w-1", "c-w-2"]) == {
        "create": ["c-w-2"],
        "destroy": ["c-w-3"],
        "keep": ["c-w-1"],
    }

    class Node:
        def __init__(self, tags: dict[str, str]) -> None:
            self.extra = {"tags": tags}

    nodes = [
        Node({"clusterforge_cluster": "old", "clusterforge_expires": "2001-01-01T00:00:00Z"}),
        Node({"clusterforge_cluster": "new", "clusterforge_expires": "2999-01-01T00:00:00Z"}),
        Node({"clusterforge_cluster": "untagged"}),
    ]
    now = "2026-01-01T00:00:00Z"
    assert libcloud_nodes.expired_clusters(nodes, "clusterforge_cluster", "clusterforge_expires", now) == [
        "old"
    ]


def test_single_ansible_task_with_the_dummy_driver(tmp_path: Path) -> None:
    env = {
        "ANSIBLE_CONFIG": str(cloudtest.REPO / "ansible.cfg"),
        "HOME": str(tmp_path),
        "PATH": "/usr/bin:/bin",
    }
    args = {"provider": "dummy", "cluster_name": "one", "node_sets": SETS}
    done = subprocess.run(
        [str(cloudtest.ANSIBLE), "localhost", "-m", "libcloud_nodes", "-a", json.dumps(args)],
        cwd=cloudtest.REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    result = json.loads(done.stdout.split("=>", 1)[1])
    assert result["changed"] and result["created"] == ["one-head-1", "one-worker-1", "one-worker-2"]
    assert [node["groups"] for node in result["nodes"]] == [
        ["head", "dask_scheduler"],
        ["workers"],
        ["workers"],
    ]
    assert all(node["public_ips"] for node in result["nodes"])


def test_ec2_driver_against_moto(moto: Any, aws_env: None) -> None:
    image = moto.client().describe_images()["Images"][0]["ImageId"]
    ec2_sets = [{**node_set, "size": "t3.micro", "image": image} for node_set in SETS]
    request = params(
        provider="ec2",
        endpoint_url=moto.url,
        cluster_name="lc",
        node_sets=ec2_sets,
        tags={"clusterforge_expires": "2001-01-01T00:00:00Z"},
        wait_timeout=60,
    )
    created = libcloud_nodes.run(dict(request), check_mode=False)
    assert created["created"] == ["lc-head-1", "lc-worker-1", "lc-worker-2"]
    instances = {cloudtest.tags(i)["Name"]: i for i in cloudtest.live_instances(moto.client(), "lc")}
    assert sorted(instances) == ["lc-head-1", "lc-worker-1", "lc-worker-2"]
    head_tags = cloudtest.tags(instances["lc-head-1"])
    assert head_tags["clusterforge_groups"] == "head,dask_scheduler"
    assert head_tags["clusterforge_node_set"] == "head"
    assert all(i["InstanceType"] == "t3.micro" and i["ImageId"] == image for i in instances.values())

    assert not libcloud_nodes.run(dict(request), check_mode=False)["changed"]
    listed = libcloud_nodes.run(dict(request, state="list", cluster_name=""), check_mode=False)
    assert listed["expired_clusters"] == ["lc"]

    gone = libcloud_nodes.run(dict(request, state="absent"), check_mode=False)
    assert gone["destroyed"] == ["lc-head-1", "lc-worker-1", "lc-worker-2"]
    assert cloudtest.live_instances(moto.client(), "lc") == []


def test_playbooks_through_libcloud_ec2(moto: Any) -> None:
    client = moto.client()
    image = client.describe_images()["Images"][0]["ImageId"]
    extra = cloudtest.base_vars(moto, "lp", cloud_provider="ec2", cloud_image_id=image)

    up = cloudtest.playbook(moto, "cloud_up.yml", extra)
    assert up.returncode == 0, up.output
    names = sorted(cloudtest.tags(i)["Name"] for i in cloudtest.live_instances(client, "lp"))
    assert names == ["lp-head-1", "lp-worker-1", "lp-worker-2"]
    again = cloudtest.playbook(moto, "cloud_up.yml", extra)
    assert again.returncode == 0 and again.recap["changed"] == 0, again.output

    down = cloudtest.playbook(
        moto,
        "cloud_down.yml",
        {"cloud_endpoint_url": moto.url, "cloud_provider": "ec2", "cloud_cluster_name": "lp"},
    )
    assert down.returncode == 0, down.output
    assert "cluster lp: no node left" in down.output
    assert cloudtest.live_instances(client, "lp") == []
