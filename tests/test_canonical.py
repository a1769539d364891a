"""One content hash (steerguard.canonical.digest) for bundles, decisions, plans, vectors, audit
records and checkpoints; the shipped artefacts keep the hashes they carry."""

from __future__ import annotations

import ast
import hashlib
import json
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from steerguard.audit.chain import ChainHead, record_hash
from steerguard.canonical import canonical, digest
from steerguard.directions.fingerprint import ModelFingerprint
from steerguard.directions.storage import load_vector, save_vector
from steerguard.directions.vector import ExtractionInfo, SteeringVector
from steerguard.errors import VectorError
from steerguard.policy.bundle import spec_hash
from steerguard.policy.loader import load_bundle
from steerguard.resources import default_bundle_path, shipped_vectors_dir
from steerguard.runtime.plan import SteeringPlan

PACKAGE = Path(__file__).resolve().parents[1] / "steerguard"
# hashlib outside canonical.py, each for a hash someone else defines
OTHER_HASHES = {
    "audit/acl.py": "Redis ACL passwords are given as their SHA-256",
    "audit/sink.py": "Redis names a script by its SHA-1 (EVALSHA)",
    "runtime/loading.py": "a streamed checksum of the model file (gigabytes)",
    "server/keys.py": "API key files hold a key as its SHA-256",
    "oversight/dashboard.py": "HTTP ETags of the vendored static files",
}


def test_only_canonical_py_hashes_content() -> None:
    users = set()
    for path in PACKAGE.rglob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            if "hashlib" in names:
                users.add(path.relative_to(PACKAGE).as_posix())
    assert users - {"canonical.py"} == set(OTHER_HASHES)


def test_digest_reads_bytes_text_and_json_in_order() -> None:
    obj = {"b": [1, 0.5, "é"], "a": None}
    assert digest(obj) == hashlib.sha256(b'{"a":null,"b":[1,0.5,"\xc3\xa9"]}').hexdigest()
    assert digest("x\n", obj, b"\x00", size=16) == hashlib.sha256(
        b"x\n" + canonical(obj) + b"\x00").hexdigest()[:16]
    assert digest("ab") != digest(["ab"])


def test_the_shipped_bundle_and_vectors_keep_their_hashes() -> None:
    bundle = load_bundle(default_bundle_path())
    assert bundle.content_hash == spec_hash(bundle.spec) == digest(
        bundle.spec.model_dump(mode="json", by_alias=True))
    # a stored value: a change to how bundles are hashed shows here
    assert bundle.content_hash.startswith("2523325c0d6f")
    folder = shipped_vectors_dir() / "smollm2-135m"
    recorded = {}
    for path in sorted(folder.glob("*.safetensors")):
        with safe_open(str(path), framework="pt") as f:
            recorded[path.stem] = json.loads((f.metadata() or {})["steerguard"])["content_hash"]
        vector = load_vector(path)
        assert vector.content_hash() == recorded[path.stem] == vector._compute_hash()
    assert recorded["caution"] == "f0ee80f64900dac0" and len(recorded) == 6


def test_plans_records_and_checkpoints_use_the_digest() -> None:
    plan = SteeringPlan.single("calm", 0.25, [3, 4], positions="last_2")
    assert plan.content_hash() == digest(plan.model_dump(mode="json"))
    payload, h = ChainHead("c").seal({"kind": "decision"})
    assert h == record_hash(payload) == digest(payload)


def _vector(small: float) -> SteeringVector:
    fp = ModelFingerprint(model_id="m", architecture="A", hidden_size=4, num_layers=2)
    return SteeringVector(name="v", fingerprint=fp, description="naïve",
                          directions={0: torch.tensor([1.0, 2.0, 3.0, 4.0])},
                          extraction=ExtractionInfo(method="mean_diff",
                                                    layer_scores={0: small}))


def test_a_file_recording_the_plain_json_hash_loads_with_it(tmp_path: Path) -> None:
    """Metadata with tiny numbers or non-ASCII text serialises differently in Python's json
    and in canonical JSON; a file that recorded the former is intact and keeps it."""
    vector = _vector(3e-05)
    path = save_vector(vector, tmp_path / "v.safetensors")
    with safe_open(str(path), framework="pt") as f:
        meta = json.loads((f.metadata() or {})["steerguard"])
        tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118
    plain = json.dumps(vector.metadata(), sort_keys=True, separators=(",", ":"))
    old = hashlib.sha256(plain.encode() + b"".join(vector.tensor_bytes())).hexdigest()[:16]
    assert old != vector.content_hash()
    recorded = {"steerguard": json.dumps({**meta, "content_hash": old})}
    save_file(tensors, str(path), metadata=recorded)
    assert load_vector(path).content_hash() == old
    tensors["layer.0"] = tensors["layer.0"] * 2
    save_file(tensors, str(path), metadata=recorded)
    with pytest.raises(VectorError, match="was altered"):
        load_vector(path)
