"""A simulated two-node cluster (``ray.cluster_utils.Cluster``): workers on both nodes, the
surface equal to the local one bit for bit."""

from __future__ import annotations

import numpy as np
import pytest

ray = pytest.importorskip("ray")

from ray_grid_child import plane_kwargs, tiny_problem  # noqa: E402
from shenjing.analysis.landscape import plane  # noqa: E402
from shenjing.backend import Backend  # noqa: E402


@pytest.fixture(scope="module")
def two_nodes():
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True,
                      head_node_args={"num_cpus": 1, "include_dashboard": False})
    cluster.add_node(num_cpus=1)
    cluster.wait_for_nodes()
    yield cluster
    ray.shutdown()
    cluster.shutdown()


def test_a_plane_on_two_nodes_uses_both_and_equals_local(two_nodes, tmp_path):
    net, x, y = tiny_problem()
    local = plane(net, x, y, **plane_kwargs())
    # the backend joins the cluster by its address, as `--ray-address HOST:PORT` does
    got = plane(net, x, y, path=tmp_path / "p.npz", **plane_kwargs(),
                backend=Backend("ray", address=two_nodes.address, tile=8))
    assert not ray.is_initialized()  # the connection made for the call was closed
    record = got.meta["backend"]
    assert record["cluster"]["nodes"] == 2 and record["cluster"]["resources"]["CPU"] == 2.0
    nodes = {w["node_id"] for w in record["workers"]}
    assert len(nodes) == 2, record["workers"]  # one worker on each node
    assert all(w["points"] > 0 for w in record["workers"])
    np.testing.assert_array_equal(got.loss, local.loss)
    np.testing.assert_array_equal(got.accuracy, local.accuracy)
