"""Flow-level network: alpha-beta transfers and max-min fair sharing, checked against hand math."""

from __future__ import annotations

import math
import random

import pytest
import simpy

from simulator.maxmin import max_min_rates
from simulator.network import Network

GB = 1e9


@pytest.fixture
def env() -> simpy.Environment:
    return simpy.Environment()


def _deliveries(env: simpy.Environment, net: Network, sends: list[tuple[float, list, int]]
                ) -> dict[int, float]:
    """Start each (start_s, link keys, bytes) send at its time; return index -> delivery time."""
    log: dict[int, float] = {}

    def sender(index: int, start_s: float, keys: list, num_bytes: int):
        yield env.timeout(start_s)
        flow = yield net.transfer(keys, num_bytes)
        log[index] = flow.delivered_s
        assert flow.delivered_s == env.now

    for index, (start_s, keys, num_bytes) in enumerate(sends):
        env.process(sender(index, start_s, keys, num_bytes))
    env.run()
    return log


def test_lone_transfer_takes_latency_plus_bytes_over_bandwidth(env: simpy.Environment) -> None:
    net = Network(env)
    net.add_link(("a", "s"), 25 * GB, 1.5e-6)
    net.add_link(("s", "b"), 50 * GB, 0.5e-6)
    num_bytes = 3 * (1 << 20)
    log = _deliveries(env, net, [(0.0, [("a", "s"), ("s", "b")], num_bytes)])
    assert log[0] == pytest.approx(2e-6 + num_bytes / (25 * GB), rel=1e-15)
    assert net.links[("a", "s")].num_bytes == num_bytes
    assert net.links[("s", "b")].num_bytes == num_bytes


def test_two_equal_flows_share_a_link_half_each(env: simpy.Environment) -> None:
    net = Network(env, record_timeline=True)
    net.add_link(("a", "b"), 10 * GB, 0.0)
    log = _deliveries(env, net, [(0.0, [("a", "b")], 10**9), (0.0, [("a", "b")], 10**9)])
    assert log == {0: pytest.approx(0.2, rel=1e-15), 1: pytest.approx(0.2, rel=1e-15)}
    link = net.links[("a", "b")]
    assert link.peak_num_flows == 2
    assert link.rate_timeline == [(0.0, 10 * GB), (0.2, 0.0)]
    assert link.busy_s == pytest.approx(0.2)


def test_three_flow_max_min_worked_by_hand(env: simpy.Environment) -> None:
    """Links A (10 B/s) and B (4 B/s); flow 1 on A, flow 2 on A+B, flow 3 on B.

    t=0: B is the bottleneck (4/2 = 2 < 10/2), so flows 2 and 3 get 2 B/s and flow 1 gets the
    rest of A, 8 B/s. Flow 3 (8 B) ends at t=4. Now A offers 5 each, B offers 4 to flow 2 alone:
    flow 2 gets 4, flow 1 gets 6. Flow 1 has 40 - 32 = 8 B left: ends at 4 + 8/6 = 16/3.
    Flow 2 has 20 - 8 = 12 B left at 4 B/s (still limited by B): ends at t=7.
    """
    net = Network(env)
    net.add_link(("x", "A"), 10.0)
    net.add_link(("y", "B"), 4.0)
    log = _deliveries(env, net, [(0.0, [("x", "A")], 40),
                                 (0.0, [("x", "A"), ("y", "B")], 20),
                                 (0.0, [("y", "B")], 8)])
    assert log[2] == pytest.approx(4.0, rel=1e-15)
    assert log[0] == pytest.approx(16 / 3, rel=1e-15)
    assert log[1] == pytest.approx(7.0, rel=1e-15)


def test_late_flow_slows_an_earlier_one(env: simpy.Environment) -> None:
    """Flow 0 alone for 1 s (5 of its 10 B at 5 B/s), then shares: 2.5 B/s each."""
    net = Network(env)
    net.add_link(("a", "b"), 5.0)
    log = _deliveries(env, net, [(0.0, [("a", "b")], 10), (1.0, [("a", "b")], 10)])
    assert log[0] == pytest.approx(3.0)  # 5 B left at 2.5 B/s
    assert log[1] == pytest.approx(4.0)  # 5 B by t=3, then 5 B alone at 5 B/s


def test_unlimited_links_and_zero_bytes_take_only_latency(env: simpy.Environment) -> None:
    net = Network(env)
    net.add_link(("a", "b"), math.inf, 2e-6)
    net.add_link(("b", "c"), 1.0, 3e-6)
    log = _deliveries(env, net, [(0.0, [("a", "b")], 10**12), (0.0, [("b", "c")], 0)])
    assert log == {0: 2e-6, 1: 3e-6}
    assert net.num_active_flows == 0


def test_rate_cap_acts_as_a_private_bottleneck(env: simpy.Environment) -> None:
    net = Network(env)
    net.add_link(("a", "b"), 10.0)
    done: list[float] = []
    capped = net.make_path([("a", "b")], rate_cap_bytes_per_s=2.0)
    net.start_flow(capped, 10, on_delivered=lambda f: done.append(f.delivered_s))
    net.start_flow(net.make_path([("a", "b")]), 16, on_delivered=lambda f: done.append(
        f.delivered_s))
    env.run()
    assert sorted(done) == [pytest.approx(2.0), pytest.approx(5.0)]  # the other gets 8 B/s


def test_progressive_filling_gives_every_flow_a_bottleneck_on_random_instances() -> None:
    """Max-min fairness: every flow has a saturated link on which its rate is the largest."""
    rng = random.Random(7)
    for _ in range(200):
        env = simpy.Environment()
        net = Network(env)
        links = [net.add_link((i, "s"), rng.choice([1.0, 2.0, 5.0, 7.5])) for i in range(5)]
        flows = []
        for _ in range(rng.randint(1, 8)):
            keys = [link.key for link in rng.sample(links, rng.randint(1, 3))]
            flows.append(net.start_flow(net.make_path(keys), 100))
        component = list(dict.fromkeys(f for link in links for f in link.flows))
        rates = dict(max_min_rates(component))
        for link in links:
            assert sum(rates[f] for f in link.flows) <= link.capacity_bytes_per_s * (1 + 1e-12)
        for flow in flows:
            saturated = [link for link in flow.links
                         if sum(rates[f] for f in link.flows)
                         >= link.capacity_bytes_per_s * (1 - 1e-12)]
            assert any(rates[flow] >= max(rates[f] for f in link.flows) * (1 - 1e-12)
                       for link in saturated), "flow has no bottleneck link"


def test_bad_links_are_rejected_with_the_key(env: simpy.Environment) -> None:
    net = Network(env)
    with pytest.raises(ValueError,
                       match=r"link \('a', 'b'\): capacity_bytes_per_s = 0 must be > 0"):
        net.add_link(("a", "b"), 0)
    net.add_link(("a", "b"), 1.0)
    with pytest.raises(ValueError, match=r"already in the network"):
        net.add_link(("a", "b"), 1.0)
    with pytest.raises(KeyError, match=r"link \('b', 'a'\) is not in the network"):
        net.transfer([("b", "a")], 1)


def test_link_bytes_sum_every_path_through_the_link_by_traffic_class(
        env: simpy.Environment) -> None:
    """Bytes are counted per path; a link shared by two paths reports both, split by class."""
    net = Network(env)
    for key in (("a", "s"), ("b", "s"), ("s", "c")):
        net.add_link(key, 10.0)
    from_a, from_b = net.make_path([("a", "s"), ("s", "c")]), net.make_path([("b", "s"),
                                                                             ("s", "c")])
    net.start_flow(from_a, 30, traffic_class=0)
    net.start_flow(from_b, 7, traffic_class=1)
    net.start_flow(from_a, 5, traffic_class=1)
    assert net.links[("s", "c")].num_bytes == 0  # credited when the bandwidth phase ends
    env.run()
    assert net.links[("s", "c")].num_bytes == 42
    assert net.links[("s", "c")].bytes_by_class == {0: 30, 1: 12}
    assert net.links[("a", "s")].bytes_by_class == {0: 30, 1: 5}
    assert net.links[("b", "s")].num_bytes == 7
    assert [s.num_bytes for s in net.stats()] == [35, 7, 42]
