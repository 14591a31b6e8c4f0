"""run_batch on a real local Ray (2 CPUs, one session for the module): the same bytes as the
serial calls, bad checkpoints reported while the rest completes, a killed worker retried into
exactly one result, and a re-run that skips what is done."""

import json
import os
import re
import shutil
from pathlib import Path

import pytest
import torch

from flipguard.batch import Job, batch, read_results, run_batch, run_item
from flipguard.defend import defend_checkpoint
from flipguard.scan import scan_checkpoint
from tests.support.fixtures import attack_checkpoint
from tests.support.checkpoints import make_tiny_checkpoint

os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")  # before ray is imported: loopback only
ray = pytest.importorskip("ray")


@pytest.fixture(scope="module", autouse=True)
def local_ray():
    """One Ray session for the module (run_batch uses a session it finds open)."""
    ray.init(address="local", num_cpus=2, log_to_driver=False, include_dashboard=False, logging_level="ERROR")
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def zoo(tmp_path_factory):
    """Two clean tiny checkpoints, two attacked copies, and a damaged one."""
    root = tmp_path_factory.mktemp("batch-zoo")
    llama = make_tiny_checkpoint(root / "llama", family="llama", hidden=128, seed=1, with_tokenizer=False)
    make_tiny_checkpoint(root / "gpt2", family="gpt2", dtype=torch.float16, hidden=128, seed=2, with_tokenizer=False)
    attack_checkpoint(llama, root / "attacked-nf4", ["nf4"], margin=0.05)
    attack_checkpoint(llama, root / "attacked-int8", ["int8"], margin=0.05)
    (root / "damaged").mkdir()
    shutil.copyfile(llama / "config.json", root / "damaged" / "config.json")
    (root / "damaged" / "model.safetensors").write_bytes((llama / "model.safetensors").read_bytes()[:5000])
    return root


def without_timing(text: str) -> str:
    return re.sub(r'"seconds": [0-9.e+-]+', '"seconds": 0', text)


def test_scan_batch_is_the_serial_scans_and_bad_inputs_do_not_stop_it(zoo, tmp_path):
    good = ["llama", "gpt2", "attacked-nf4", "attacked-int8"]
    inputs = [str(zoo / name) for name in good] + [str(zoo / "damaged"), str(zoo / "absent")]
    result = batch(inputs, tmp_path / "out", schemes="int8,nf4")
    lines = {Path(line["input"]).name: line for line in result.lines}
    assert result.counts == {"clean": 2, "backdoor": 2, "error": 2} and result.exit_code == 2
    for name in good:
        serial = scan_checkpoint(zoo / name, schemes=["int8", "nf4"], progress=False)
        assert lines[name]["status"] == serial.verdict.status
        assert lines[name]["targeted"] == serial.verdict.targeted
        saved = (tmp_path / "out" / lines[name]["report"]).read_text()
        assert without_timing(saved) == without_timing(serial.to_json() + "\n")  # as `scan -f json -o` writes
    assert lines["attacked-nf4"]["targeted"] == ["nf4"] and lines["attacked-int8"]["targeted"] == ["int8"]
    # the damaged checkpoint fails inside its task, the absent one before any: each with its sentence
    assert lines["damaged"]["status"] == "error" and "model.safetensors" in lines["damaged"]["error"]
    assert lines["absent"]["status"] == "error" and "does not exist" in lines["absent"]["error"]
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary == json.loads(result.to_json())
    assert summary["counts"] == result.counts and summary["ran"] == 5 and summary["done_before"] == 0
    assert {Path(f["input"]).name: f["reason"] for f in summary["failures"]} == {
        "damaged": lines["damaged"]["error"], "absent": lines["absent"]["error"]}
    ledger = dict(read_results(tmp_path / "out" / "results.jsonl"))
    assert len(ledger) == 6 == len((tmp_path / "out" / "results.jsonl").read_text().splitlines())

    # re-run: everything is done; a rewritten checkpoint (new fingerprint) and a new job are not
    again = batch(inputs, tmp_path / "out", schemes="int8,nf4")
    assert again.ran == 0 and again.done_before == 6 and again.lines == result.lines
    os.utime(zoo / "gpt2" / "model.safetensors")
    third = batch(inputs + [str(zoo / "llama")], tmp_path / "out", schemes="int8,nf4")
    assert third.ran == 1 and third.done_before == 5 and third.duplicates == [str(zoo / "llama")]
    assert len((tmp_path / "out" / "results.jsonl").read_text().splitlines()) == 7


def test_defend_batch_is_byte_identical_to_serial_defend(zoo, tmp_path):
    names = ["llama", "attacked-nf4"]
    result = batch([zoo / n for n in names], tmp_path / "out", "defend", schemes=["nf4"], policy="adaptive")
    assert result.counts == {"defended": 2} and result.exit_code == 0
    for line in result.lines:
        name = Path(line["input"]).name
        serial = tmp_path / "serial" / name
        defend_checkpoint(zoo / name, serial, schemes=["nf4"], policy="adaptive")
        produced = tmp_path / "out" / line["output"]
        files = sorted(p.relative_to(serial) for p in serial.rglob("*"))
        assert sorted(p.relative_to(produced) for p in produced.rglob("*")) == files
        for file in files:
            assert (produced / file).read_bytes() == (serial / file).read_bytes(), (name, file)
    assert {Path(line["input"]).name: line["looked_attacked"] > 0 for line in result.lines} == {
        "llama": False, "attacked-nf4": True}


def test_a_killed_worker_is_retried_into_exactly_one_result(zoo, tmp_path):
    marks = tmp_path / "marks"
    marks.mkdir()

    def dies_first_time(path, name, job, out):
        """run_item, but the first attempt on attacked-nf4 kills its own worker process."""
        mark = marks / name
        if name.startswith("attacked-nf4") and not mark.exists():
            mark.write_text(str(os.getpid()))
            os._exit(1)
        (marks / f"{name}.done").write_text(str(os.getpid()))
        return run_item(path, name, job, out)

    inputs = [zoo / "llama", zoo / "attacked-nf4", zoo / "gpt2"]
    result = run_batch(inputs, Job("scan", schemes=("nf4",)), tmp_path / "out", work=dies_first_time)
    assert result.counts == {"clean": 2, "backdoor": 1} and result.exit_code == 1
    victim = next(line for line in result.lines if "attacked-nf4" in line["input"])
    killed, finished = (marks / victim["name"]).read_text(), (marks / f"{victim['name']}.done").read_text()
    assert killed != finished  # the retry ran in another worker process
    lines = (tmp_path / "out" / "results.jsonl").read_text().splitlines()
    assert sorted(json.loads(line)["input"] for line in lines) == sorted(map(str, inputs))  # once each
    serial = scan_checkpoint(zoo / "attacked-nf4", schemes=["nf4"], progress=False)
    assert without_timing((tmp_path / "out" / victim["report"]).read_text()) == without_timing(serial.to_json() + "\n")


def test_a_task_that_keeps_dying_or_raises_fails_alone_and_is_retried_next_run(zoo, tmp_path):
    def always_dies(path, name, job, out):
        if name.startswith("gpt2"):
            os._exit(1)
        if name.startswith("llama"):
            raise ZeroDivisionError("a bug")
        return run_item(path, name, job, out)

    inputs = [zoo / "llama", zoo / "gpt2", zoo / "attacked-nf4"]
    job = Job("scan", schemes=("nf4",))
    result = run_batch(inputs, job, tmp_path / "out", max_retries=0, work=always_dies)
    assert result.counts == {"failed": 2, "backdoor": 1} and result.exit_code == 70
    reasons = {Path(f["input"]).name: f["reason"] for f in result.failures}
    assert "worker died 1 time(s)" in reasons["gpt2"]
    assert reasons["llama"].startswith("internal error: ZeroDivisionError: a bug")
    assert len((tmp_path / "out" / "results.jsonl").read_text().splitlines()) == 1  # failures are not results
    again = run_batch(inputs, job, tmp_path / "out")
    assert again.ran == 2 and again.done_before == 1 and again.counts == {"clean": 2, "backdoor": 1}


def test_an_output_inside_an_input_is_refused_before_anything_is_written(zoo, tmp_path):
    from flipguard.errors import UsageError

    for out in (zoo / "llama", zoo / "llama" / "results"):
        with pytest.raises(UsageError, match="inside the input checkpoint|is the input checkpoint"):
            batch([zoo / "gpt2", zoo / "llama"], out)
    assert not (zoo / "llama" / "results").exists() and not (zoo / "llama" / "results.jsonl").exists()
    (tmp_path / "file").write_text("")
    with pytest.raises(UsageError, match="is a file"):
        batch(zoo / "llama", tmp_path / "file")
    with pytest.raises(UsageError, match="no checkpoint given"):
        batch([], tmp_path / "out")
