"""cocotb's JUnit XML results files, read and checked.

cocotb writes one ``<testcase>`` per test into ``<test_module>.results.xml``;
a failing test does not make the simulation fail.  :func:`parse_results` reads
such a file into a :class:`SimResults`, and :func:`check_results` raises
:class:`CocotbTestFailure` with the first failure's message.
:class:`SimulationError` is the error of a simulation that did not produce a
readable results file (or, in :mod:`deltarnn.sim.runner`, of a failed build).

Nothing here imports cocotb or needs a simulator.
"""

from __future__ import annotations

import os
import xml.etree.ElementTree as ElementTree
from dataclasses import dataclass, field
from pathlib import Path

__all__ = [
    "SimulationError",
    "CocotbTestFailure",
    "TestCaseResult",
    "SimResults",
    "parse_results",
    "check_results",
]


class SimulationError(RuntimeError):
    """The simulator build failed, or the simulation ended without results.

    Attributes
    ----------
    log : pathlib.Path or None
        The log file to read.
    """

    def __init__(self, message: str, *, log: Path | None = None):
        super().__init__(message)
        self.log = log


class CocotbTestFailure(AssertionError):
    """One or more cocotb tests failed; raised by :func:`check_results`.

    Attributes
    ----------
    results : SimResults
        The parsed results file.
    """

    def __init__(self, message: str, results: SimResults):
        super().__init__(message)
        self.results = results


@dataclass(frozen=True)
class TestCaseResult:
    """One ``<testcase>`` of a cocotb results file.

    Attributes
    ----------
    name, classname : str
        The cocotb test function and its module.
    status : str
        ``"passed"``, ``"failed"`` or ``"skipped"``.
    message : str
        The failure's (or skip's) one-line message; empty when passed.
    details : str
        The failure's traceback text; empty when passed.
    """

    __test__ = False    # not a pytest test class

    name: str
    classname: str
    status: str
    message: str = ""
    details: str = ""


@dataclass
class SimResults:
    """Parsed cocotb results file.

    Attributes
    ----------
    path : pathlib.Path
    testcases : list of TestCaseResult
    """

    path: Path
    testcases: list[TestCaseResult] = field(default_factory=list)

    @property
    def passed(self) -> int:
        """Number of passed tests."""
        return sum(t.status == "passed" for t in self.testcases)

    @property
    def failed(self) -> int:
        """Number of failed tests (failures and errors)."""
        return sum(t.status == "failed" for t in self.testcases)

    @property
    def skipped(self) -> int:
        """Number of skipped tests."""
        return sum(t.status == "skipped" for t in self.testcases)

    @property
    def failures(self) -> list[TestCaseResult]:
        """The failed test cases, in order."""
        return [t for t in self.testcases if t.status == "failed"]


def parse_results(path: str | os.PathLike) -> SimResults:
    """Read a cocotb (JUnit XML) results file.

    A ``<testcase>`` with a ``<failure>`` or ``<error>`` child is failed (its
    ``message`` attribute, else its ``type``, else the tag is the message, its
    text the details), one with a ``<skipped>`` child skipped, any other one
    passed.  Test cases are collected from anywhere in the document, in order.

    Parameters
    ----------
    path : path-like

    Returns
    -------
    SimResults

    Raises
    ------
    SimulationError
        If the file is missing or is not valid XML.
    """
    path = Path(path)
    try:
        root = ElementTree.parse(path).getroot()
    except (OSError, ElementTree.ParseError) as exc:
        raise SimulationError(f"cannot read cocotb results {path}: {exc}") from None
    out = SimResults(path)
    for case in root.iter("testcase"):
        status, message, details = "passed", "", ""
        for tag in ("failure", "error"):
            node = case.find(tag)
            if node is not None:
                status = "failed"
                message = node.get("message") or node.get("type") or tag
                details = (node.text or "").strip()
                break
        else:
            node = case.find("skipped")
            if node is not None:
                status = "skipped"
                message = node.get("message") or ""
        out.testcases.append(TestCaseResult(case.get("name", "?"), case.get("classname", ""),
                                            status, message, details))
    return out


def check_results(path: str | os.PathLike) -> tuple[int, int]:
    """Check a cocotb results file and return its counts.

    Parameters
    ----------
    path : path-like
        A results file, e.g. the return value of
        :func:`deltarnn.sim.runner.run_cocotb`.

    Returns
    -------
    tuple of int
        ``(passed, failed)``; ``failed`` is always 0 when the function returns.

    Raises
    ------
    CocotbTestFailure
        If any test failed: the message names the failed tests and gives the
        first failure's message and traceback.
    SimulationError
        If the file holds no test at all, or cannot be read.
    """
    results = parse_results(path)
    if not results.testcases:
        raise SimulationError(f"no cocotb test ran (empty results in {results.path}); "
                              f"check the test module name and testcase filter")
    if results.failed:
        first = results.failures[0]
        names = ", ".join(f"{t.classname}.{t.name}" for t in results.failures)
        raise CocotbTestFailure(
            f"{results.failed} of {len(results.testcases)} cocotb tests failed: {names}\n"
            f"{first.classname}.{first.name}: {first.message}\n{first.details}",
            results)
    return results.passed, results.failed
