"""The lab tier: one lab bring-up shared by every test that needs nodes, torn down at the end.

The order of the tier is set here, not by file names: tests that need no lab (the
agent sandboxes) run first, on a quiet machine; then tests that use the running lab;
then those that kill, power off or cut off nodes (marker `disruptive`, ordered among
themselves by its `order`, default 0); tests that take the lab down (fixture
`lab_teardown`) run last. Run in any other order, a test that finds the lab gone
brings it up again.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from lab.bringup import down, is_up, up
from lab.containers import load_state
from lab.stack import lab_nodes
from lab.topology import LabNode
from tests.helpers import lab_recovery

REPORT = Path(os.environ.get("LAB_REPORT", "build/lab-report.json"))
HERE = Path(__file__).parent


def _rank(item: pytest.Item) -> tuple[int, int]:
    names = getattr(item, "fixturenames", ())
    if "lab_teardown" in names:
        return 3, 0
    if (disruptive := item.get_closest_marker("disruptive")) is not None:
        return 2, disruptive.kwargs.get("order", 0)
    return (1 if "nodes" in names else 0), 0


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Order this folder's tests by `_rank` (stable: file and definition order within a
    rank), in the places they hold among the session's tests."""
    slots = [i for i, item in enumerate(items) if HERE in item.path.parents]
    for slot, item in zip(slots, sorted((items[i] for i in slots), key=_rank), strict=True):
        items[slot] = item


class LabSession:
    """The session's lab: brought up when a test first needs it (unless one is already
    up), again if a test took it down; a failed bring-up is not retried."""

    def __init__(self) -> None:
        self.brought_up = False
        self.failure: Exception | None = None

    def nodes(self) -> list[LabNode]:
        if self.failure is not None:
            pytest.fail(f"the lab's bring-up failed earlier in this session: {self.failure}")
        if not is_up():
            try:
                up()
            except Exception as e:
                self.failure = e
                raise
            self.brought_up = True
        return lab_nodes()


@pytest.fixture(scope="session")
def lab_session() -> Iterator[LabSession]:
    if os.geteuid() != 0:
        pytest.fail("the lab tier needs root")
    session = LabSession()
    yield session
    if session.brought_up and not os.environ.get("LAB_KEEP"):
        down()


@pytest.fixture
def nodes(lab_session: LabSession) -> list[LabNode]:
    return lab_session.nodes()


@pytest.fixture
def lab_teardown(nodes: list[LabNode]) -> list[LabNode]:
    """The running lab, for a test that takes it down (such tests run last)."""
    return nodes


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Iterator[None]:
    """A failed lab test's report carries the lab's state (CI keeps nothing else)."""
    outcome = yield
    rep = outcome.get_result()
    if rep.when == "call":
        item.stash[CALL_FAILED] = rep.failed
        if rep.failed and "nodes" in getattr(item, "fixturenames", ()) and "timings" in load_state():
            try:
                rep.sections.append(("lab state at the failure", lab_recovery.describe()))
            except Exception as e:  # the report must not hide the test's own failure
                rep.sections.append(("lab state at the failure", f"could not be read: {e!r}"))


CALL_FAILED = pytest.StashKey[bool]()


# Why the lab could not be put back after a failed disruptive test (empty: it was).
_NOT_PUT_BACK: list[str] = []
# After a failed disruptive test the cluster is given this long to settle again.
PUT_BACK_SETTLE_S = 300


@pytest.fixture(autouse=True)
def _lab_put_back_after_a_failed_disruptive_test(request: pytest.FixtureRequest) -> Iterator[None]:
    """One failed disruptive test must not fail the ones after it: the nodes it left
    off or cut off are brought back and the stack converged again, as an operator
    would (the next test waits for a settled cluster). A lab that cannot be put back
    fails the later disruptive tests at once, naming why, instead of each waiting
    out its own timeout for a cluster that will not settle."""
    disruptive = request.node.get_closest_marker("disruptive") is not None
    if disruptive and _NOT_PUT_BACK:
        pytest.fail(f"not run: the lab could not be put back after {_NOT_PUT_BACK[0]}", pytrace=False)
    yield
    if not disruptive or not request.node.stash.get(CALL_FAILED, False) or "timings" not in load_state():
        return
    try:
        from tests.lab.test_lab_cluster import _settled
        powered = lab_recovery.restore()
        print(f"lab put back after {request.node.name}: powered on {powered or 'nothing'}")
        ran = lab_recovery.converge(_settled, PUT_BACK_SETTLE_S)
        print(f"lab converged after {request.node.name}: {ran} commands ran, the cluster settled")
    except Exception as e:  # reported by every later disruptive test (a replay's error can be long)
        _NOT_PUT_BACK.append(f"{request.node.name}: {str(e)[:500]}")
        print(f"lab not put back after {request.node.name}: {e}")


@pytest.fixture(scope="session")
def report() -> Iterator[dict]:
    data: dict = {}
    yield data
    # Figures this session did not measure stay (the benchmarks' own, e.g. "seeding").
    earlier = json.loads(REPORT.read_text()) if REPORT.exists() else {}
    REPORT.parent.mkdir(parents=True, exist_ok=True)
    REPORT.write_text(json.dumps(earlier | data, indent=2))
