"""A defended checkpoint is still flagged (the defense leaves its own empty band); scan says why."""

import shutil

import torch

from tests.support.fixtures import attack_checkpoint
from flipguard.scan.runner import DEFENDED_NOTE, DEFENSE_REPORT, scan_checkpoint
from tests.support.checkpoints import make_tiny_checkpoint


def test_note_only_for_a_flagged_checkpoint_with_a_defense_report(tmp_path):
    clean = make_tiny_checkpoint(tmp_path / "clean", family="llama", dtype=torch.float32)
    attacked = tmp_path / "attacked"
    attack_checkpoint(clean, attacked, ["nf4"], margin=0.05)

    plain = scan_checkpoint(attacked, schemes=["nf4"], progress=False)
    assert plain.verdict.status == "backdoor" and DEFENDED_NOTE not in plain.notes

    (attacked / DEFENSE_REPORT).write_text("{}")  # what defend writes beside the weights (content unread)
    labelled = scan_checkpoint(attacked, schemes=["nf4"], progress=False)
    assert labelled.verdict.status == "backdoor"  # the file changes no verdict
    assert DEFENDED_NOTE in labelled.notes

    shutil.copy(attacked / DEFENSE_REPORT, clean / DEFENSE_REPORT)
    assert DEFENDED_NOTE not in scan_checkpoint(clean, schemes=["nf4"], progress=False).notes


def test_the_name_is_the_one_defend_writes():
    from flipguard.defend import REPORT_FILE

    assert DEFENSE_REPORT == REPORT_FILE
