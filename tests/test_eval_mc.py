"""Multiple choice: MMLU / CMMLU readers on fixtures in the real layouts, prompts, per-subject accuracy."""

from pathlib import Path

import pytest

from lifecycle.engine import Engine, Score
from lifecycle.errors import UserError
from lifecycle.eval import mc
from lifecycle.eval.tasks import BUILTIN_DIR, Task, load_task, resolve_tasks

FIX = Path(__file__).parent / "fixtures" / "eval"


class LetterEngine(Engine):
    """Scores the letter `pick(context)` highest: a stand-in model with known answers."""

    def __init__(self, pick):
        self.pick, self.contexts = pick, []

    def generate(self, prompts, params=None):
        raise NotImplementedError

    def stream(self, prompt, params=None):
        raise NotImplementedError

    def score(self, requests):
        self.contexts += [c for c, _ in requests]
        return [Score(0.0 if cont.strip() == self.pick(ctx) else -5.0, 1, True) for ctx, cont in requests]


@pytest.mark.unit
def test_read_mmlu_layout():
    items = mc.read_mmlu(FIX / "mmlu", "test")
    assert [it["subject"] for it in items] == ["abstract_algebra"] * 3 + ["astronomy"] * 2
    first = items[0]
    assert first["question"].startswith("Find the degree") and first["choices"] == ["0", "2", "1", "3"]
    assert first["answer"] == 1
    assert items[4]["choices"][0].startswith('Because the surface is covered with heavily oxidized ("rusted")')
    dev = mc.read_mmlu(FIX / "mmlu", "dev")
    assert len(dev) == 3 and dev[1]["choices"][0] == "True, True"
    with pytest.raises(UserError, match="no MMLU files"):
        mc.read_mmlu(FIX / "cmmlu", "test")


@pytest.mark.unit
def test_read_cmmlu_layout():
    items = mc.read_cmmlu(FIX / "cmmlu", "test")
    assert [it["subject"] for it in items] == ["agronomy"] * 3 + ["anatomy"] * 2
    assert items[0]["question"] == "植物进行光合作用的主要器官是" and items[0]["answer"] == 2
    assert items[3]["choices"] == ["35℃", "37℃", "39℃", "41℃"] and items[3]["answer"] == 1


@pytest.mark.unit
def test_mmlu_prompt_few_shot():
    dev = mc.read_mmlu(FIX / "mmlu", "dev")
    item = mc.read_mmlu(FIX / "mmlu", "test")[0]
    reqs = mc.requests_for(item, dev[:1], "letter")
    ctx = reqs[0][0]
    assert ctx.startswith("The following are multiple choice questions (with answers) about abstract algebra.\n\n")
    assert "Z_3[x]/(x^2 + c)" in ctx and "Answer: B\n\n" in ctx  # the shot, with its answer
    assert ctx.endswith("A. 0\nB. 2\nC. 1\nD. 3\nAnswer:")
    assert [c for _, c in reqs] == [" A", " B", " C", " D"]


@pytest.mark.unit
def test_mc_accuracy_per_subject_mmlu_and_cmmlu():
    # the stand-in answers "B" everywhere: MMLU test answers are B,C,B | A,A -> 2/3 and 0/2
    task = resolve_tasks([f"mmlu:{FIX / 'mmlu'}"])[0]
    task.options["shots"] = 1
    eng = LetterEngine(lambda ctx: "B")
    r = mc.run(task, eng, None)["metrics"]
    assert r["accuracy"] == pytest.approx(2 / 5) and r["n"] == 5
    assert r["accuracy/abstract_algebra"] == pytest.approx(2 / 3) and r["accuracy/astronomy"] == 0.0
    assert all("Answer: B" in c or "Answer: D" in c for c in eng.contexts)  # one shot in every prompt

    task = resolve_tasks([f"cmmlu:{FIX / 'cmmlu'}"])[0]
    r = mc.run(task, LetterEngine(lambda ctx: "B"), None)["metrics"]  # answers C,B,A | B,B
    assert r["accuracy/agronomy"] == pytest.approx(1 / 3) and r["accuracy/anatomy"] == 1.0
    assert r["accuracy"] == pytest.approx(3 / 5)


@pytest.mark.unit
def test_cmmlu_uses_chinese_prompt():
    item = mc.read_cmmlu(FIX / "cmmlu", "test")[0]
    ctx = mc.requests_for(item, [], "letter", "zh")[0][0]
    assert ctx.startswith("以下是关于agronomy的单项选择题") and ctx.endswith("答案：")


@pytest.mark.unit
def test_jsonl_mc_validation(tmp_path):
    (tmp_path / "d.jsonl").write_text('{"question": "q", "choices": ["x", "y"], "answer": "C"}\n')
    task = Task("t", "mc", {"data": "d.jsonl", "mode": "text"}, tmp_path)
    with pytest.raises(UserError, match="answer 'C' is not one of the 2 options"):
        mc.run(task, LetterEngine(lambda c: "x"), None)


@pytest.mark.integration
def test_builtin_tiny_mc_on_tiny_arith(hf_engine):
    task = load_task(BUILTIN_DIR / "tiny-mc.yaml")
    r = mc.run(task, hf_engine, None)["metrics"]
    assert set(k for k in r if k.startswith("accuracy/")) == {"accuracy/addition", "accuracy/reverse", "accuracy/length"}
    assert r["accuracy/addition"] >= 0.9 and r["accuracy"] >= 0.85


@pytest.mark.unit
@pytest.mark.parametrize("layout, content, message", [
    ("mmlu", b"q,1,2,3,4,A\nq2,\xff\xfe,2,3,4,B\n", r"a_test\.csv:2: row is not valid UTF-8"),
    ("mmlu", b"q,1,2,3,4,A\nq2,1,2\n", r"a_test\.csv:2: row has fewer cells than the header \(6\)"),
    ("mmlu", b"q,1,2,3,4,E\n", r"a_test\.csv:1: answer 'E' is not one of the 4 options"),
    ("cmmlu", b",Question,A,B,C,D,Answer\n0,q,1,2,3,4,A\n1,q,1,2\n", r"s\.csv:3: row has fewer cells"),
    ("cmmlu", b"\xef\xbb\xbf,Question,A,B,C,D,Answer\n0,q,1,2,3,4,A,extra\n", r"s\.csv:2: row has more cells"),
    ("cmmlu", b",Question,A,B,C,D,Answer\n0,\xe9,1,2,3,4,A\n", r"s\.csv:2: row is not valid UTF-8"),
    ("cmmlu", b",Q,A,B,C,D,Answer\n0,q,1,2,3,4,A\n", r"s\.csv: header must hold"),
])
def test_damaged_mmlu_and_cmmlu_files_are_one_line(tmp_path, layout, content, message):
    (tmp_path / "test").mkdir()
    (tmp_path / "test" / ("a_test.csv" if layout == "mmlu" else "s.csv")).write_bytes(content)
    with pytest.raises(UserError, match=message) as err:
        (mc.read_mmlu if layout == "mmlu" else mc.read_cmmlu)(tmp_path, "test")
    assert "\n" not in str(err.value)
