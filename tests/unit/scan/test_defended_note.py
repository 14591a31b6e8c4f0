"""A defended checkpoint says so; the scan checks the record against the weights and never lets
it clear a finding."""

import json
import shutil

import torch

from flipguard.defend import REPORT_FILE, defend_checkpoint
from flipguard.scan import scan_checkpoint
from tests.support.fixtures import attack_checkpoint
from flipguard.scan.record import RECORD_FILE
from tests.support.checkpoints import make_tiny_checkpoint

DEMO = "src/flipguard/demo/assets"


def test_the_name_is_the_one_defend_writes():
    assert RECORD_FILE == REPORT_FILE


def test_a_real_defense_record_is_confirmed_by_the_weights(tmp_path):
    defend_checkpoint(f"{DEMO}/nf4", tmp_path / "defended", schemes=["nf4"], progress=False)
    report = scan_checkpoint(tmp_path / "defended", schemes=["nf4"], progress=False)
    assert report.verdict.status == "backdoor"  # the traces stay: a record clears nothing
    check = report.defense
    assert check is not None and check.consistent, check
    assert check.tensors_listed == check.tensors_matching == 28
    sig = check.signature["nf4"]
    assert sig.depth == 0.02 and sig.recorded_flips > 0 and sig.at_depth >= 0.5 * sig.recorded_flips
    console = report.to_console()
    assert console.splitlines()[2].startswith("DEFENSE RECORD: flipguard") and "its signature" in console
    assert report.to_dict()["defense_record"]["consistent"] is True


def test_a_copied_record_does_not_match_undefended_weights(tmp_path):
    defend_checkpoint(f"{DEMO}/nf4", tmp_path / "defended", schemes=["nf4"], progress=False)
    forged = tmp_path / "forged"
    shutil.copytree(f"{DEMO}/nf4", forged)  # the attacked weights, with the defended copy's record
    shutil.copy(tmp_path / "defended" / RECORD_FILE, forged / RECORD_FILE)
    report = scan_checkpoint(forged, schemes=["nf4"], progress=False)
    assert report.verdict.status == "backdoor" and report.exit_code == 1
    assert not report.defense.consistent and not report.defense.signature["nf4"].consistent
    assert "do NOT match the record" in report.to_console()


def test_a_record_that_is_no_record_is_said_and_changes_nothing(tmp_path):
    clean = make_tiny_checkpoint(tmp_path / "clean", family="llama", dtype=torch.float32)
    attacked = tmp_path / "attacked"
    attack_checkpoint(clean, attacked, ["nf4"], margin=0.05)
    assert scan_checkpoint(attacked, schemes=["nf4"], progress=False).defense is None
    for text in ("{}", "not json", json.dumps([1, 2]), "[" * 100000):
        (attacked / RECORD_FILE).write_text(text)
        report = scan_checkpoint(attacked, schemes=["nf4"], progress=False)
        assert report.verdict.status == "backdoor" and not report.defense.consistent
    (clean / RECORD_FILE).write_text("{}")
    assert scan_checkpoint(clean, schemes=["nf4"], progress=False).verdict.status == "clean"
