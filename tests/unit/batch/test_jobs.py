"""Job: validated on construction, hashed on what it does; run_item: the plain per-checkpoint call."""

import json

import pytest

from flipguard.batch import Job, run_item
from flipguard.defend import REPORT_FILE, defend_checkpoint
from flipguard.errors import UsageError
from flipguard.scan import scan_checkpoint

DEMO = "src/flipguard/demo/assets"


def test_scan_job_is_normalised():
    job = Job("scan", schemes=("NF4", "int8", "nf4"), alpha=0.01)
    assert job.schemes == ("nf4", "int8") and job.alpha == 0.01
    assert Job("scan").schemes == ("int8", "fp4", "nf4")
    assert Job("scan").hash == Job("scan", schemes=("int8", "fp4", "nf4")).hash
    assert Job("scan").hash != Job("scan", schemes=("nf4",)).hash
    assert Job("scan").hash != Job("scan", alpha=0.01).hash


def test_defend_job_hashes_its_policy_with_defaults_filled():
    plain, explicit = Job("defend", policy="ratio"), Job("defend", policy="ratio", params={"r": 0.15})
    assert plain.hash == explicit.hash and plain.to_dict()["params"] == {"r": 0.15}
    assert Job("defend").policy == "adaptive"
    assert Job("defend", policy="ratio", params={"r": 0.2}).hash != plain.hash
    assert Job("defend").hash != Job("scan").hash
    json.dumps(Job("defend", policy="random").to_dict())  # nested policy parameters stay JSON-ready


@pytest.mark.parametrize("kwargs, message", [
    (dict(kind="audit"), "unknown batch job 'audit'"),
    (dict(schemes=("nf5",)), "unknown scheme 'nf5'"),
    (dict(alpha=2.0), "alpha must be between 0 and 1"),
    (dict(load_dtype="int8"), "unknown load_dtype 'int8'"),
    (dict(policy="ratio"), "belong to a defend job"),
    (dict(kind="defend", alpha=0.01), "alpha belongs to a scan job"),
    (dict(kind="defend", policy="ratio", params={"r": 2.0}), "r must be between 0 and 1"),
    (dict(kind="defend", depth=0.7), "depth must be between 0 and 0.5"),
])
def test_bad_jobs_say_which_field(kwargs, message):
    with pytest.raises(UsageError, match=message):
        Job(**kwargs)


def test_run_item_scan_is_the_serial_scan(tmp_path):
    line = run_item(f"{DEMO}/nf4", "nf4", Job("scan", schemes=("nf4",)), str(tmp_path))
    serial = scan_checkpoint(f"{DEMO}/nf4", schemes=["nf4"], progress=False)
    assert line["status"] == "backdoor" == serial.verdict.status and line["exit_code"] == 1
    assert line["targeted"] == ["nf4"] and line["findings"] == len(serial.findings) > 0
    saved, fresh = json.loads(line["report_json"]), serial.to_dict()
    saved.pop("seconds"), fresh.pop("seconds")
    assert saved == fresh
    assert list(tmp_path.iterdir()) == []  # a scan writes nothing itself: the driver does


def test_run_item_defend_writes_what_defend_checkpoint_writes(tmp_path):
    job = Job("defend", schemes=("nf4",), policy="ratio", params={"r": 0.1})
    line = run_item(f"{DEMO}/nf4", "nf4-x", job, str(tmp_path))
    assert line["status"] == "defended" and line["output"] == "defended/nf4-x" and line["flipped"]["nf4"] > 0
    defend_checkpoint(f"{DEMO}/nf4", tmp_path / "serial", schemes=["nf4"], policy="ratio", params={"r": 0.1})
    batch_dir, serial_dir = tmp_path / "defended" / "nf4-x", tmp_path / "serial"
    assert sorted(p.name for p in batch_dir.iterdir()) == sorted(p.name for p in serial_dir.iterdir())
    for file in serial_dir.iterdir():
        assert (batch_dir / file.name).read_bytes() == file.read_bytes(), file.name
    assert (batch_dir / REPORT_FILE).is_file()


def test_run_item_retry_replaces_a_dead_attempts_leftovers(tmp_path):
    """A worker killed mid-defense leaves a temporary directory, or a whole output it renamed into
    place just before dying: the retry removes the one and replaces the other."""
    job = Job("defend", schemes=("nf4",), policy="threshold")
    (tmp_path / "defended" / ".m.flipguard-tmp-0123456789ab").mkdir(parents=True)
    (tmp_path / "defended" / "m").mkdir()
    (tmp_path / "defended" / "m" / "half-written").write_text("x")
    assert run_item(f"{DEMO}/nf4", "m", job, str(tmp_path))["status"] == "defended"
    assert sorted(p.name for p in (tmp_path / "defended").iterdir()) == ["m"]
    assert not (tmp_path / "defended" / "m" / "half-written").exists()


def test_run_item_bad_checkpoint_is_a_result_with_its_sentence(tmp_path):
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "config.json").write_text('{"model_type": "llama"}')
    (tmp_path / "broken" / "model.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json")
    line = run_item(str(tmp_path / "broken"), "broken", Job("scan"), str(tmp_path))
    assert line["status"] == "error" and line["exit_code"] == 2
    assert "model.safetensors" in line["error"] and line["error"].endswith(".")
