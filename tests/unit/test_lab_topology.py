"""The lab's address plan: a replaced node (new generation) or an added one (new
slot) gets addresses and a droplet id no other node has, and never the lab's own."""

from __future__ import annotations

import itertools

import pytest

from lab.topology import AUDITOR_IP, GATEWAY, RESERVED_IP, SECOND_CLIENT, host_number, nodes_for

LAB_ADDRESSES = {RESERVED_IP, GATEWAY, SECOND_CLIENT, AUDITOR_IP}


def test_every_slot_and_generation_has_addresses_of_its_own() -> None:
    seen: dict[int, tuple[int, int]] = {}
    for index, generation in itertools.product(range(10), range(21)):
        host = host_number(index, generation)
        assert host not in seen, (index, generation, seen.get(host))
        seen[host] = (index, generation)
        node = nodes_for(["app1"], generations={"app1": generation}, indexes={"app1": index})[0]
        assert node.public_ip not in LAB_ADDRESSES and 1 < host < 250


def test_a_replaced_node_moves_and_the_others_stay() -> None:
    before = nodes_for(["app1", "app2", "witness"])
    after = nodes_for(["app1", "app2", "witness"], generations={"app2": 1})
    assert [(n.private_ip, n.droplet_id) for n in before] == [("10.99.0.11", 5000), ("10.99.0.12", 5001),
                                                               ("10.99.0.13", 5002)]
    assert (after[1].private_ip, after[1].public_ip, after[1].droplet_id) == ("10.99.0.22", "203.0.113.22", 5101)
    assert [after[0], after[2]] == [before[0], before[2]]


def test_an_added_node_takes_a_new_slot_without_moving_the_witness() -> None:
    grown = nodes_for(["app1", "app2", "app3", "witness"], indexes={"app1": 0, "app2": 1, "witness": 2, "app3": 3})
    assert {n.name: n.private_ip for n in grown} == {"app1": "10.99.0.11", "app2": "10.99.0.12",
                                                      "app3": "10.99.0.14", "witness": "10.99.0.13"}


@pytest.mark.parametrize(("index", "generation"), [(10, 0), (0, 21), (0, -1)])
def test_no_addresses_left_is_a_clear_error(index: int, generation: int) -> None:
    with pytest.raises(ValueError, match="node index|generation"):
        host_number(index, generation)
