"""bridge/_native.pyi mirrors the seam as the compiled module has it: the typed values and NativeBridge.

For each class below, the stub and the runtime name the same members, and every constructor and method the
same parameters in the same order (PyO3 records them in `__text_signature__`).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from bridge import _native

STUB = Path(_native.__file__).parent / "_native.pyi"
#: The seam's classes (native/py/src/seam.rs and NativeBridge); the bench's classes are not covered here.
SEAM = (
    "MediaKind",
    "CandidateType",
    "DtlsSetup",
    "HashFunction",
    "Fingerprint",
    "Candidate",
    "SsrcGroupSemantics",
    "SsrcGroup",
    "Source",
    "TransportState",
    "TransportStateEvent",
    "StatsEvent",
    "CommandFailedEvent",
    "NativeBridge",
)


def _stub_classes() -> dict[str, ast.ClassDef]:
    tree = ast.parse(STUB.read_text())
    return {node.name: node for node in tree.body if isinstance(node, ast.ClassDef)}


def _parameters(signature: str | None) -> list[str]:
    assert signature is not None
    names = [p.strip().split("=")[0] for p in signature.strip("()").split(",") if p.strip()]
    return [n for n in names if n not in ("$self", "self")]


@pytest.mark.parametrize("name", SEAM)
def test_the_stub_mirrors_the_module(name: str) -> None:
    stub = _stub_classes()[name]
    runtime = getattr(_native, name)
    members: dict[str, list[str] | None] = {}
    for node in stub.body:
        if isinstance(node, ast.FunctionDef):
            members[node.name] = [a.arg for a in node.args.args[1:]]
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            members[node.target.id] = None
    public = {m for m in vars(runtime) if not m.startswith("_")}
    assert public == {m for m in members if not m.startswith("_")}, name
    if "__init__" in members:
        assert _parameters(runtime.__text_signature__) == members["__init__"], name
    for member, parameters in members.items():
        value = getattr(runtime, member)
        if parameters is not None and member != "__init__" and callable(value):
            assert _parameters(value.__text_signature__) == parameters, f"{name}.{member}"
